"""Report upsert (worker) and the report list (gateway, dashboard)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query, Request
from sqlalchemy.orm import Session

from contracts.bundle import TriageLevel
from contracts.errors import DomainError, error_detail
from contracts.jobs import JobStatus
from contracts.ood import OodDecision
from contracts.reports import (
    JobView,
    ReportPage,
    ReportUpsert,
    ReportUpsertBatch,
    ReportUpsertBatchResult,
    ReportUpsertOutcome,
)
from contracts.reviews import ReportSort, ReviewState
from contracts.text import NO_CONTROL_CHARACTERS, IsoDatetime
from services.reports.api.checks import check_job_id, check_tenant
from services.reports.api.deps import (
    ActorDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    internal_router,
    wake_dispatcher,
)
from services.reports.api.views import job_view, job_views
from services.reports.db.audit import record_read
from services.reports.db.jobs import list_jobs
from services.reports.db.models import Job
from services.reports.db.reports import refresh_has_heatmap, upsert_many, upsert_report
from services.reports.domain.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PriorityPosition,
    ReportFilters,
    decode_cursor,
    decode_priority_cursor,
    encode_cursor,
    encode_priority_cursor,
    priority_group,
)
from services.reports.domain.payloads import check_report

router = internal_router("reports")


def _utc(value: datetime | None) -> datetime | None:
    """Query datetimes without an offset are taken as UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@router.put("/internal/v1/reports/{job_id}")
def put_report(
    job_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: ReportUpsert,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> JobView:
    """Store a job's result, idempotently: a redelivered result updates the one report row."""
    check_tenant(body.tenant_id, tenant)
    check_job_id(body.job_id, job_id)
    heatmap = check_report(body)
    job = upsert_report(session, tenant, body, heatmap, settings.delivery_window)
    wake_dispatcher(request, session)
    return job_view(job)


@router.put("/internal/v1/reports")
def put_reports(
    body: ReportUpsertBatch, tenant: TenantDep, session: SessionDep, settings: SettingsDep, request: Request
) -> ReportUpsertBatchResult:
    """Store several jobs' results (a worker's micro-batch), each as `PUT /internal/v1/reports/{id}`
    would: one that would be refused there (other tenant, unknown job, invalid report) gets that
    error in its place, and the others are stored all the same. The valid ones are written in one
    transaction; if that fails, each is stored on its own to find who fails."""
    outcomes: dict[int, ReportUpsertOutcome] = {}
    stored_jobs: dict[int, tuple[ReportUpsert, Job]] = {}
    valid: list[tuple[int, ReportUpsert, bytes | None]] = []
    for index, report in enumerate(body.reports):
        try:
            check_tenant(report.tenant_id, tenant)
            valid.append((index, report, check_report(report)))
        except DomainError as exc:
            outcomes[index] = _failed(report, exc)
    try:
        stored = upsert_many(
            session, tenant, [(report, heatmap) for _, report, heatmap in valid], settings.delivery_window
        )
        for (index, report, _), job in zip(valid, stored, strict=True):
            stored_jobs[index] = (report, job)
    except DomainError:
        session.rollback()
        for index, report, heatmap in valid:
            try:
                stored_jobs[index] = (
                    report,
                    upsert_report(session, tenant, report, heatmap, settings.delivery_window),
                )
            except DomainError as exc:
                session.rollback()
                outcomes[index] = _failed(report, exc)
    outcomes.update(_stored(session, stored_jobs))
    wake_dispatcher(request, session)
    return ReportUpsertBatchResult(results=[outcomes[i] for i in range(len(body.reports))])


def _stored(session: Session, stored: dict[int, tuple[ReportUpsert, Job]]) -> dict[int, ReportUpsertOutcome]:
    """Each stored report's outcome: its job's status, and the job itself where the worker asked
    for it (a request waits on it); those views are built together, a few queries in all."""
    wanted = [(index, job) for index, (report, job) in stored.items() if report.return_job]
    refresh_has_heatmap(session, [job for _, job in wanted])
    views = dict(
        zip([index for index, _ in wanted], job_views(session, [job for _, job in wanted]), strict=True)
    )
    return {
        index: ReportUpsertOutcome(job_id=report.job_id, status=JobStatus(job.status), job=views.get(index))
        for index, (report, job) in stored.items()
    }


def _failed(report: ReportUpsert, exc: DomainError) -> ReportUpsertOutcome:
    return ReportUpsertOutcome(job_id=report.job_id, error=error_detail(exc))


@router.get("/internal/v1/reports")
def list_reports(
    tenant: TenantDep,
    session: SessionDep,
    actor: ActorDep,
    patient_ref: Annotated[str | None, Query(max_length=128, pattern=NO_CONTROL_CHARACTERS)] = None,
    triage_level: TriageLevel | None = None,
    status: JobStatus | None = None,
    ood_decision: OodDecision | None = None,
    since: Annotated[IsoDatetime | None, Query(description="inclusive")] = None,
    until: Annotated[IsoDatetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    sort: ReportSort = ReportSort.newest,
    review_state: ReviewState | None = None,
) -> ReportPage:
    """The tenant's jobs, newest first or as the priority worklist (`sort`), with results where
    present (queued jobs appear too)."""
    filters = ReportFilters(
        patient_ref=patient_ref,
        triage_level=triage_level,
        status=status,
        ood_decision=ood_decision,
        since=_utc(since),
        until=_utc(until),
        review_state=review_state,
    )
    after: tuple[datetime, str] | PriorityPosition | None = None
    if cursor:
        after = decode_priority_cursor(cursor) if sort == ReportSort.priority else decode_cursor(cursor)
    jobs = list_jobs(session, tenant, filters, limit + 1, after, sort)
    next_cursor = None
    if len(jobs) > limit:
        jobs = jobs[:limit]
        next_cursor = _cursor_after(jobs[-1], sort)
    page = ReportPage(items=job_views(session, jobs), next_cursor=next_cursor)
    # One entry per page a user reads (the jobs in it are not listed: a page every few seconds).
    record_read(
        session,
        tenant_id=tenant,
        actor=actor,
        action="report.list",
        resource_type="report",
        resource_id=None,
        details={"count": len(page.items)},
    )
    return page


def _cursor_after(job: Job, sort: ReportSort) -> str:
    """The cursor of the page that follows `job` in the `sort` order."""
    if sort == ReportSort.newest:
        return encode_cursor(job.created_at, job.id)
    report = job.report
    group = priority_group(
        job.status,
        report.review_state if report is not None else None,
        report.triage_level if report is not None else None,
    )
    return encode_priority_cursor(PriorityPosition(group, job.created_at, job.id))
