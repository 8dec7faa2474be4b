"""Performance monitoring's queries (issue 12): two grouped queries per request, bounded by the
tenant and the window, whatever the number of reports; services/reports/domain/monitoring_stats
folds their rows into the figures."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Date, and_, case, cast, func, literal_column, select
from sqlalchemy.orm import Session

from contracts.jobs import JobStatus
from contracts.monitoring import MonitoringBucket, MonitoringView
from services.reports.db.models import Job, Report, Review
from services.reports.domain.monitoring_stats import (
    DayCount,
    MonitoringWindow,
    ReportCell,
    model_performance,
    ood_rejection,
)

_FINISHED = (JobStatus.done.value, JobStatus.rejected.value)
_UNREVIEWED = "unreviewed"


def monitoring_view(
    session: Session, tenant_id: str, window: MonitoringWindow, bucket: MonitoringBucket
) -> MonitoringView:
    """The tenant's performance figures over the window."""
    return MonitoringView(
        since=window.since,
        until=window.until,
        bucket=bucket,
        models=model_performance(report_cells(session, tenant_id, window)),
        ood_rejection=ood_rejection(finished_jobs_per_day(session, tenant_id, window), window, bucket),
    )


def report_cells(session: Session, tenant_id: str, window: MonitoringWindow) -> list[ReportCell]:
    """The window's done and rejected reports (by completed_at), counted per model version and
    every field the figures depend on. The latest review is the one whose version is the
    report's review_version (a join on the unique (job_id, version), not a subquery per report)."""
    # Grouped by the raw columns, not by comparisons: a comparison's bound parameter would differ
    # between SELECT and GROUP BY on PostgreSQL, which then refuses the query.
    grouping = (
        Report.model_name,
        Report.model_version,
        Report.model_sha256,
        Report.status,
        Report.review_state,
        Review.agrees_with_model,
        Review.confirmed_malignant,
        Report.triage_level,
        Job.body_site,
        Job.age,
    )
    query = (
        select(*grouping, func.count(), func.max(Report.completed_at))
        .join(Job, and_(Job.id == Report.job_id, Job.tenant_id == Report.tenant_id))
        .outerjoin(
            Review,
            and_(
                Review.job_id == Report.job_id,
                Review.version == Report.review_version,
                Review.tenant_id == Report.tenant_id,
            ),
        )
        .where(
            Report.tenant_id == tenant_id,
            Report.status.in_(_FINISHED),
            Report.completed_at >= window.since,
            Report.completed_at < window.until,
        )
        .group_by(*grouping)
    )
    return [
        ReportCell(
            model=(name, version, sha256),
            status=status,
            reviewed=review_state != _UNREVIEWED,
            agrees_with_model=agrees,
            confirmed_malignant=malignant,
            model_urgent=triage_level == "urgent",
            body_site=body_site,
            age=age,
            count=count,
            last_completed_at=last_completed_at,
        )
        for (
            name,
            version,
            sha256,
            status,
            review_state,
            agrees,
            malignant,
            triage_level,
            body_site,
            age,
            count,
            last_completed_at,
        ) in session.execute(query)
    ]


def finished_jobs_per_day(session: Session, tenant_id: str, window: MonitoringWindow) -> list[DayCount]:
    """Jobs created in the window (jobs.created_at) that ended done or rejected, per UTC day (at
    most one row per day of the window; weeks are folded from days in Python)."""
    day = _created_utc_day(session)
    rejected = func.sum(case((Job.status == JobStatus.rejected.value, 1), else_=0))
    query = (
        select(day, func.count(), rejected)
        .where(
            Job.tenant_id == tenant_id,
            Job.status.in_(_FINISHED),
            Job.created_at >= window.since,
            Job.created_at < window.until,
        )
        .group_by(day)
    )
    return [
        DayCount(day=_as_date(value), jobs=jobs, rejected=int(rejected_jobs))
        for value, jobs, rejected_jobs in session.execute(query)
    ]


def _created_utc_day(session: Session) -> ColumnElement[Any]:
    """The UTC calendar day of jobs.created_at. SQLite keeps naive UTC text (date() reads
    its first ten characters' date); PostgreSQL keeps timestamptz, whose cast to date would use
    the session's time zone, so it is first converted to UTC."""
    if session.get_bind().dialect.name == "sqlite":
        return func.date(Job.created_at)
    # A literal, not a bound parameter, for the GROUP BY reason given in report_cells.
    return cast(func.timezone(literal_column("'UTC'"), Job.created_at), Date)


def _as_date(value: object) -> date:
    """SQLite answers date() with text, PostgreSQL with a date."""
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))
