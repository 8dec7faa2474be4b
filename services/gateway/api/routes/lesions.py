"""Issue 12: lesions tracked over time: their images and comparisons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from contracts.lesions import (
    LESION_ID_PATTERN,
    LesionComparison,
    LesionCreate,
    LesionHistory,
    LesionList,
    LesionView,
)
from services.gateway.api.deps import ID_PATTERN, ContextDep, PrincipalDep, RequestIdDep
from services.gateway.api.responses import PRIVATE_HEADERS, api_key_route

router = APIRouter(tags=["lesions"])

LesionIdPath = Annotated[str, Path(pattern=LESION_ID_PATTERN, description="a lesion id")]
JobIdQuery = Annotated[str, Query(pattern=ID_PATTERN, description="a job id (an image of this lesion)")]


@router.post(
    "/v1/lesions",
    response_model=LesionView,
    status_code=status.HTTP_201_CREATED,
    summary="Start following a patient's lesion",
    description="A lesion of a patient (`patient_ref` is opaque to SkinTriage) with an optional label, "
    "body site, laterality and position on the body map (`view` front or back, `x` and `y` in [0, 1]). "
    "Images name it with the form field `lesion_id` of `POST /v1/images`. Audited `lesion.create`.",
    # 400 `request.malformed`: a body that is not JSON.
    responses=api_key_route(400),
)
async def create_lesion(
    body: LesionCreate,
    response: Response,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
) -> LesionView:
    """The new lesion."""
    response.headers.update(PRIVATE_HEADERS)
    return await context.reports.create_lesion(principal.tenant_id, body, request_id=request_id)


@router.get(
    "/v1/lesions",
    response_model=LesionList,
    summary="A patient's lesions (the body map)",
    description="The lesions of one patient, oldest first, each with its image count and newest image. "
    "Audited `lesion.read`.",
    responses=api_key_route(),
)
async def list_lesions(
    patient_ref: Annotated[str, Query(min_length=1, max_length=128, description="the patient's reference")],
    response: Response,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
) -> LesionList:
    """The patient's lesions."""
    response.headers.update(PRIVATE_HEADERS)
    return await context.reports.list_lesions(principal.tenant_id, patient_ref, request_id=request_id)


@router.get(
    "/v1/lesions/{lesion_id}",
    response_model=LesionHistory,
    summary="A lesion's images over time and the changes between them",
    description="The lesion, its images oldest first (triage level, top class, P(malignant), segmented "
    "lesion area) and, for each two consecutive done images, the comparison (`changes`): change in "
    "P(malignant), embedding distance, relative change in lesion area, each flagged against thresholds "
    "calibrated on HAM10000 lesions imaged more than once. 404 `lesion.not_found` for a lesion the "
    "tenant does not have. Audited `lesion.read`.",
    responses=api_key_route(404),
)
async def get_lesion(
    lesion_id: LesionIdPath,
    response: Response,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
) -> LesionHistory:
    """The lesion's history."""
    response.headers.update(PRIVATE_HEADERS)
    return await context.reports.get_lesion(principal.tenant_id, lesion_id, request_id=request_id)


@router.get(
    "/v1/lesions/{lesion_id}/comparison",
    response_model=LesionComparison,
    summary="Two images of a lesion compared",
    description="`to_job` against `from_job`, both done images of this lesion: the deltas, the flags "
    "(`null` where a measure is missing or not comparable, e.g. embeddings of different models) and "
    "the thresholds applied, with notes. 404 `lesion.not_found` or `job.not_found`; 422 "
    "`lesion.job_not_in_lesion` for an image of another lesion; 409 `lesion.job_not_comparable` for an "
    "image without a result. Audited `lesion.compare`.",
    responses=api_key_route(404, 409),
)
async def compare_lesion_images(
    lesion_id: LesionIdPath,
    from_job: JobIdQuery,
    to_job: JobIdQuery,
    response: Response,
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
) -> LesionComparison:
    """The comparison of two of the lesion's images."""
    response.headers.update(PRIVATE_HEADERS)
    return await context.reports.compare_lesion_images(
        principal.tenant_id, lesion_id, from_job, to_job, request_id=request_id
    )
