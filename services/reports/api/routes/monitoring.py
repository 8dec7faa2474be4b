"""Issue 12: the model's performance in this clinic: overrides, sensitivity and specificity
against confirmed diagnoses, OOD rejections over time."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from contracts.monitoring import MonitoringBucket, MonitoringView
from contracts.text import IsoDatetime
from services.common.errors import RequestInvalidError
from services.common.request_id import current_request_id
from services.reports.api.deps import ActorDep, SessionDep, TenantDep, internal_router
from services.reports.db.audit import record_audit
from services.reports.db.monitoring import monitoring_view
from services.reports.db.types import utc_now
from services.reports.domain.monitoring_stats import monitoring_window

router = internal_router("monitoring")


@router.get("/internal/v1/monitoring")
def read_monitoring(
    tenant: TenantDep,
    session: SessionDep,
    actor: ActorDep,
    since: Annotated[
        IsoDatetime | None, Query(description="inclusive; default: 90 days before until")
    ] = None,
    until: Annotated[IsoDatetime | None, Query(description="exclusive; default: now")] = None,
    bucket: MonitoringBucket = MonitoringBucket.week,
) -> MonitoringView:
    """Per model version: results, rejections, reviews, overrides, sensitivity and specificity
    against confirmed diagnoses; the OOD rejection rate per day or week. 422 `request.invalid`
    for an empty, reversed or over-long window. A user's read is audited (`monitoring.read`)."""
    try:
        window = monitoring_window(since, until, utc_now())
    except ValueError as exc:
        raise RequestInvalidError(
            str(exc), [{"loc": ["query", "since"], "msg": str(exc), "type": "value_error"}]
        ) from exc
    view = monitoring_view(session, tenant, window, bucket)
    if actor is not None:
        record_audit(
            session,
            tenant_id=tenant,
            actor=actor,
            action="monitoring.read",
            resource_type="monitoring",
            resource_id=None,
            request_id=current_request_id(),
            details={
                "since": window.since.isoformat(),
                "until": window.until.isoformat(),
                "bucket": bucket.value,
            },
        )
        session.commit()
    return view
