"""Reading jobs, their stored images and heatmaps (proxied to reports, scoped to the tenant)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from contracts.reports import JobView
from services.gateway.adapters.reports_client import Blob
from services.gateway.api.deps import ContextDep, JobIdPath, PrincipalDep, RequestIdDep
from services.gateway.api.responses import PRIVATE_HEADERS, api_key_route

router = APIRouter(tags=["jobs"])

_ALLOWED_IMAGE_TYPES = frozenset({"image/jpeg", "image/png"})


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobView,
    summary="A job's status and, when finished, its report",
    responses=api_key_route(404),
)
async def get_job(
    job_id: JobIdPath, context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep
) -> JobView:
    """Status, metadata and (when done or rejected) the result."""
    return await context.reports.get_job(principal.tenant_id, job_id, request_id=request_id)


@router.get(
    "/v1/jobs/{job_id}/image",
    response_class=Response,
    summary="The stored copy of the image (upright, stripped of metadata, re-encoded)",
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}}, "description": "The stored image"},
        **api_key_route(404),
    },
)
async def get_job_image(
    job_id: JobIdPath, context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep
) -> Response:
    """Exactly what was queued for inference."""
    blob = await context.reports.get_job_image(principal.tenant_id, job_id, request_id=request_id)
    return _image_response(blob, fallback="image/jpeg")


@router.get(
    "/v1/jobs/{job_id}/heatmap.png",
    response_class=Response,
    summary="The class-activation heatmap of a finished job",
    responses={
        200: {"content": {"image/png": {}}, "description": "The heatmap"},
        **api_key_route(404),
    },
)
async def get_job_heatmap(
    job_id: JobIdPath, context: ContextDep, principal: PrincipalDep, request_id: RequestIdDep
) -> Response:
    """Where the model looked; 404 until the job is done (or when none was made)."""
    blob = await context.reports.get_job_heatmap(principal.tenant_id, job_id, request_id=request_id)
    return _image_response(blob, fallback="image/png")


def _image_response(blob: Blob, *, fallback: str) -> Response:
    media_type = blob.media_type if blob.media_type in _ALLOWED_IMAGE_TYPES else fallback
    return Response(content=blob.content, media_type=media_type, headers=PRIVATE_HEADERS)
