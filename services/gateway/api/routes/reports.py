"""`GET /v1/reports`: the tenant's jobs and results, filtered and cursor-paginated."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from contracts.bundle import TriageLevel
from contracts.jobs import JobStatus
from contracts.ood import OodDecision
from contracts.reports import ReportPage
from contracts.reviews import ReportSort, ReviewState
from contracts.text import NO_CONTROL_CHARACTERS, IsoDatetime
from services.gateway.api.deps import ContextDep, PrincipalDep, RequestIdDep
from services.gateway.api.responses import api_key_route

router = APIRouter(tags=["reports"])


@router.get(
    "/v1/reports",
    response_model=ReportPage,
    summary="List jobs and their reports, newest first or as the priority worklist",
    description="Filters combine with AND. Pass `next_cursor` back as `cursor` for the next page "
    "(with the same `sort`: a cursor of the other order is 400 `cursor.invalid`).",
    # 400 `cursor.invalid`: a `cursor` reports did not issue.
    responses=api_key_route(400),
)
async def list_reports(
    context: ContextDep,
    principal: PrincipalDep,
    request_id: RequestIdDep,
    patient_ref: Annotated[str | None, Query(max_length=128, pattern=NO_CONTROL_CHARACTERS)] = None,
    triage_level: TriageLevel | None = None,
    status: JobStatus | None = None,
    ood_decision: OodDecision | None = None,
    since: Annotated[IsoDatetime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[IsoDatetime | None, Query(description="created before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    sort: Annotated[
        ReportSort,
        Query(
            description="`newest` first, or `priority`: results awaiting review with the model's urgent "
            "level first, then the other results awaiting review, then everything else; the "
            "longest-waiting first within each group"
        ),
    ] = ReportSort.newest,
    review_state: ReviewState | None = None,
) -> ReportPage:
    """One page of the tenant's jobs."""
    filters: dict[str, str] = {"limit": str(limit)}
    for name, value in (
        ("patient_ref", patient_ref),
        ("triage_level", triage_level),
        ("status", status.value if status else None),
        ("ood_decision", ood_decision.value if ood_decision else None),
        ("since", since.isoformat() if since else None),
        ("until", until.isoformat() if until else None),
        ("cursor", cursor),
        ("sort", sort.value),
        ("review_state", review_state.value if review_state else None),
    ):
        if value is not None:
            filters[name] = value
    return await context.reports.list_reports(principal.tenant_id, filters, request_id=request_id)
