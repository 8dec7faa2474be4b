"""Issue 12: the model's performance in this clinic: overrides, sensitivity and specificity
against confirmed diagnoses, OOD rejections over time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from contracts.monitoring import DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS, MonitoringBucket, MonitoringView
from contracts.text import IsoDatetime
from services.gateway.api.deps import AdminDep, ContextDep, RequestIdDep
from services.gateway.api.responses import api_key_route

router = APIRouter(tags=["monitoring"])


@router.get(
    "/v1/monitoring",
    response_model=MonitoringView,
    summary="The model's performance in this clinic (admins)",
    description="Per model version (reports completed in [`since`, `until`)): results, rejections, "
    "reviews and overrides (the latest review changed the triage level), and, against confirmed "
    "diagnoses, malignant sensitivity and specificity with Wilson 95% intervals, overall, per body site "
    "and per age band (a positive is a result the model called `urgent`). Then the OOD rejection rate of "
    "the jobs created in the window, per UTC day or ISO week (`bucket`). Defaults: `until` now, `since` "
    f"{DEFAULT_WINDOW_DAYS} days before it; a window over {MAX_WINDOW_DAYS} days or reversed is 422 "
    "`request.invalid`. 403 `auth.forbidden` unless the caller is an admin. Each read is audited "
    "(`monitoring.read`).",
    responses=api_key_route(403),
)
async def get_monitoring(
    context: ContextDep,
    principal: AdminDep,
    request_id: RequestIdDep,
    since: Annotated[IsoDatetime | None, Query(description="inclusive (ISO 8601)")] = None,
    until: Annotated[IsoDatetime | None, Query(description="exclusive (ISO 8601)")] = None,
    bucket: Annotated[MonitoringBucket, Query(description="the OOD rejection rate's period")] = (
        MonitoringBucket.week
    ),
) -> MonitoringView:
    """The figures, computed by reports from its tables."""
    params = {"bucket": bucket.value}
    if since is not None:
        params["since"] = since.isoformat()
    if until is not None:
        params["until"] = until.isoformat()
    return await context.reports.get_monitoring(principal.tenant_id, params, request_id=request_id)
