"""Issue 12: clinicians' reviews and sign-off, and the tenant's next steps per triage level."""

from __future__ import annotations

from fastapi import APIRouter, status

from contracts.reviews import NextSteps, NextStepsUpdate, ReviewCreate, ReviewList, ReviewView
from services.gateway.api.deps import (
    AdminDep,
    ClinicianDep,
    ContextDep,
    JobIdPath,
    PrincipalDep,
    RequestIdDep,
)
from services.gateway.api.responses import api_key_route

router = APIRouter(tags=["reviews"])


@router.post(
    "/v1/jobs/{job_id}/reviews",
    response_model=ReviewView,
    status_code=status.HTTP_201_CREATED,
    summary="Review and sign off a job's result (clinicians only)",
    description="Confirm or override the model's triage level, with an optional working diagnosis, a "
    "note and, later, a confirmed diagnosis and its basis. Every review is a new version (1, 2, ...); "
    "none is ever overwritten. The latest shows on the report (`result.review`, `result.review_state`, "
    "`result.next_step`), makes the FHIR DiagnosticReport `final` and is pushed to the tenant's FHIR "
    "endpoint. A diagnosis `code` must be one of the model's classes in that report (422 "
    "`review.unknown_class`); a diagnosis needs a code or a text (422 `request.invalid`); `malignant` "
    "is derived from a code whose malignancy the model knows and required otherwise (422 "
    "`review.malignancy_unknown`; one that contradicts the code: 422 `review.malignancy_conflict`). "
    "403 `auth.forbidden` for integrators and admins; 404 `job.not_found`; 409 `review.not_reviewable` "
    "unless the job is done; 409 `review.conflict` when `expected_version` is not the latest version "
    "(0: no review yet) or another review was written at the same moment.",
    responses=api_key_route(400, 403, 404, 409),
)
async def create_review(
    job_id: JobIdPath,
    body: ReviewCreate,
    context: ContextDep,
    principal: ClinicianDep,
    request_id: RequestIdDep,
) -> ReviewView:
    """The new version of the job's review."""
    return await context.reports.create_review(principal.tenant_id, job_id, body, request_id=request_id)


@router.get(
    "/v1/jobs/{job_id}/reviews",
    response_model=ReviewList,
    summary="A job's reviews, oldest first",
    description="Every version of the job's review, version 1 first (any role).",
    responses=api_key_route(404),
)
async def list_reviews(
    job_id: JobIdPath, context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep
) -> ReviewList:
    """The job's review history."""
    return await context.reports.list_reviews(principal.tenant_id, job_id, request_id=request_id)


@router.get(
    "/v1/next-steps",
    response_model=NextSteps,
    summary="The suggested next step per triage level",
    description="The tenant's own texts (`source`: `tenant`) or the service's defaults (`default`). "
    "Each report's `result.next_step` is the text for the clinician's level once signed off, else for "
    "the model's.",
    responses=api_key_route(),
)
async def get_next_steps(context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep) -> NextSteps:
    """The next steps in force for the caller's tenant."""
    return await context.reports.get_next_steps(principal.tenant_id, request_id=request_id)


@router.put(
    "/v1/next-steps",
    response_model=NextSteps,
    summary="Set the tenant's next step per triage level (admins only)",
    description="Each text 1 to 500 characters. Audited as `next_steps.update`. 403 `auth.forbidden` "
    "for clinicians and integrators.",
    responses=api_key_route(400, 403),
)
async def put_next_steps(
    body: NextStepsUpdate, context: ContextDep, principal: AdminDep, request_id: RequestIdDep
) -> NextSteps:
    """The tenant's next steps, as now in force."""
    return await context.reports.put_next_steps(principal.tenant_id, body, request_id=request_id)
