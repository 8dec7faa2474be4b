"""Jobs: registration (idempotent), status changes, reads and the report list."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.jobs import UNQUEUED_ERROR_CODES, JobCreate, JobStatus
from contracts.reviews import ReportSort, ReviewState
from contracts.users import Actor
from services.reports.db.batches import get_batch
from services.reports.db.deliveries import plan_job_finished
from services.reports.db.lesions import lesion_for_job
from services.reports.db.models import Job, Lesion, Report
from services.reports.db.types import utc_now
from services.reports.domain.errors import JobConflictError, JobNotFoundError
from services.reports.domain.lifecycle import ENDED_STATUSES, RUNNABLE_STATUSES, may_mark_failed
from services.reports.domain.listing import (
    PRIORITY_REST,
    PRIORITY_UNREVIEWED,
    PRIORITY_UNREVIEWED_URGENT,
    PriorityPosition,
    ReportFilters,
)


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job with its report, or JobNotFoundError (also for another tenant's job)."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise JobNotFoundError("no such job", details={"job_id": job_id})
    return job


def _existing(session: Session, tenant_id: str, body: JobCreate) -> Job | None:
    """The job this request repeats: same idempotency key, or same job id, for this tenant."""
    return _existing_many(session, tenant_id, [body])[0]


def _existing_many(session: Session, tenant_id: str, bodies: list[JobCreate]) -> list[Job | None]:
    """For each registration, the job it repeats (same idempotency key, or same job id, for this
    tenant), in two queries for all of them: a bulk registration then writes its new jobs in one
    flush, not one INSERT after each lookup."""
    keys = [body.idempotency_key for body in bodies if body.idempotency_key is not None]
    by_key: dict[str | None, Job] = {}
    if keys:
        keyed = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key.in_(keys))
        by_key = {job.idempotency_key: job for job in session.scalars(keyed)}
    by_id = {
        job.id: job for job in session.scalars(select(Job).where(Job.id.in_([b.job_id for b in bodies])))
    }
    found: list[Job | None] = []
    for body in bodies:
        job = by_key.get(body.idempotency_key) if body.idempotency_key is not None else None
        if job is None and (job := by_id.get(body.job_id)) is not None and job.tenant_id != tenant_id:
            raise JobConflictError("job id already in use", details={"job_id": body.job_id})
        found.append(job)
    return found


def create_job(
    session: Session, tenant_id: str, body: JobCreate, image: bytes, submitter: Actor | None = None
) -> tuple[Job, bool]:
    """Register a job, naming the user who submitted it (`submitter`; None: the fleet itself); a
    repeat (same idempotency key or job id) returns the original (flag False).

    Two concurrent repeats both pass the first lookup; the unique constraints let exactly one
    insert win and the loser returns the winner's job.
    """
    existing = _existing(session, tenant_id, body)
    if existing is not None:
        return existing, False
    if body.batch_id is not None:
        get_batch(session, tenant_id, body.batch_id)
    job = _new_job(tenant_id, body, image, lesion_for_job(session, tenant_id, body.metadata), submitter)
    session.add(job)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _existing(session, tenant_id, body)
        if existing is None:
            raise
        return existing, False
    return job, True


def statuses_of(session: Session, tenant_id: str, job_ids: list[str]) -> dict[str, JobStatus]:
    """job id -> status for those of `job_ids` that are the tenant's."""
    rows = session.execute(select(Job.id, Job.status).where(Job.tenant_id == tenant_id, Job.id.in_(job_ids)))
    return {job_id: JobStatus(status) for job_id, status in rows}


def get_job_image(session: Session, tenant_id: str, job_id: str) -> tuple[bytes, str]:
    """The stored (re-encoded) image bytes and their media type."""
    row = session.execute(
        select(Job.image, Job.media_type).where(Job.id == job_id, Job.tenant_id == tenant_id)
    ).one_or_none()
    if row is None:
        raise JobNotFoundError("no such job", details={"job_id": job_id})
    return row.image, row.media_type


def _new_job(
    tenant_id: str, body: JobCreate, image: bytes, lesion: Lesion | None, submitter: Actor | None
) -> Job:
    """The job's row; one naming a lesion (checked by `lesion_for_job`) without a patient_ref
    takes the lesion's."""
    meta = body.metadata
    return Job(
        id=body.job_id,
        tenant_id=tenant_id,
        batch_id=body.batch_id,
        idempotency_key=body.idempotency_key,
        status=JobStatus.queued.value,
        patient_ref=lesion.patient_ref if lesion is not None else meta.patient_ref,
        lesion_id=lesion.id if lesion is not None else None,
        body_site=meta.body_site,
        age=meta.age,
        sex=meta.sex,
        client_ref=meta.client_ref,
        filename=body.filename,
        image=image,
        media_type=body.image.media_type,
        width=body.image.width,
        height=body.image.height,
        image_sha256=body.image.sha256.lower(),
        dicom=body.dicom.model_dump(mode="json") if body.dicom is not None else None,
        submitted_by=submitter.user_id if submitter is not None else None,
        submitted_by_name=submitter.user_name if submitter is not None else None,
        report=None,
    )


def create_jobs(
    session: Session, tenant_id: str, items: list[tuple[JobCreate, bytes]], submitter: Actor | None = None
) -> list[tuple[Job, bool]]:
    """Register several jobs in ONE transaction (a batch upload's group), each as `create_job`
    would (a repeat returns the original, flag False). When the transaction cannot commit (a
    concurrent registration of the same key or id), it is rolled back and each job is registered
    on its own, so the outcome is the same either way."""
    for batch_id in {body.batch_id for body, _ in items if body.batch_id is not None}:
        get_batch(session, tenant_id, batch_id)
    results: list[tuple[Job, bool]] = []
    for (body, image), existing in zip(
        items, _existing_many(session, tenant_id, [b for b, _ in items]), strict=True
    ):
        if existing is not None:
            results.append((existing, False))
            continue
        job = _new_job(tenant_id, body, image, lesion_for_job(session, tenant_id, body.metadata), submitter)
        session.add(job)
        results.append((job, True))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return [create_job(session, tenant_id, body, image, submitter) for body, image in items]
    return results


def mark_running(
    session: Session, tenant_id: str, job_id: str, lease_seconds: int, runner: str | None = None
) -> Job:
    """`mark_many_running` for one job: the job as it is afterwards (running under this runner's
    lease, or ended, or running under another runner's live lease)."""
    job = get_job(session, tenant_id, job_id)
    mark_many_running(session, tenant_id, [job_id], lease_seconds, runner)
    session.refresh(job)
    return job


def _claimable(runner: str | None, now: datetime) -> ColumnElement[bool]:
    """The jobs a runner may (re)start: queued ones, and running ones that are its own, have no
    owner, or whose lease ran out. Without a runner (a worker from before leases had owners),
    every running job, as before."""
    if runner is None:
        return Job.status.in_([s.value for s in RUNNABLE_STATUSES])
    return or_(
        Job.status == JobStatus.queued.value,
        and_(
            Job.status == JobStatus.running.value,
            or_(
                Job.lease_owner.is_(None),
                Job.lease_owner == runner,
                Job.lease_expires_at.is_(None),
                Job.lease_expires_at < now,
            ),
        ),
    )


def mark_many_running(
    session: Session, tenant_id: str, job_ids: list[str], lease_seconds: int, runner: str | None = None
) -> tuple[int, dict[str, JobStatus], list[str]]:
    """queued -> running, or a running job's lease renewed (its runner tries it again), held by
    `runner` for `lease_seconds` from now, for those of `job_ids` that are the tenant's, in one
    UPDATE. Returns how many changed; which have ended (done, rejected or failed: a redelivered
    task must not run them again); and which are busy, running under another runner's live lease
    (two messages for one job: only the lease holder runs it). On PostgreSQL the UPDATE re-checks
    a row another transaction just claimed, so two runners claiming at once cannot both win."""
    now = utc_now()
    result = session.execute(
        update(Job)
        .where(Job.tenant_id == tenant_id, Job.id.in_(job_ids), _claimable(runner, now))
        .values(
            status=JobStatus.running.value,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            lease_owner=runner,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(
        select(Job.id, Job.status, Job.lease_owner).where(Job.tenant_id == tenant_id, Job.id.in_(job_ids))
    ).all()
    session.commit()
    finished = {row.id: JobStatus(row.status) for row in rows if JobStatus(row.status) in ENDED_STATUSES}
    busy = [
        row.id
        for row in rows
        if runner is not None and row.status == JobStatus.running.value and row.lease_owner != runner
    ]
    return int(getattr(result, "rowcount", 0) or 0), finished, busy


def requeue(session: Session, tenant_id: str, job_id: str) -> Job:
    """failed (because it was never queued, `UNQUEUED_ERROR_CODES`) -> queued, for a retry that
    will queue it now; any other job is left as it is."""
    job = get_job(session, tenant_id, job_id)
    if job.status == JobStatus.failed.value and job.error_code in UNQUEUED_ERROR_CODES:
        now = utc_now()
        job.status = JobStatus.queued.value
        job.error_code = None
        job.enqueued_at = now
        job.updated_at = now
        session.commit()
    return job


def fail_unqueued(session: Session, job_ids: list[str], error_code: str) -> None:
    """Mark these just-registered jobs failed with an `UNQUEUED_ERROR_CODES` code, where still
    queued (no task was ever sent for them; an Idempotency-Key retry re-queues them)."""
    session.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.status == JobStatus.queued.value)
        .values(status=JobStatus.failed.value, error_code=error_code, updated_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def mark_failed(
    session: Session, tenant_id: str, job_id: str, error_code: str, delivery_window: timedelta
) -> Job:
    """Record that the worker gave up, unless the job already has a result; a job failing now
    is announced (`job.finished`) unless it was never queued (the client was told already)."""
    job = get_job(session, tenant_id, job_id)
    if may_mark_failed(JobStatus(job.status)):
        ending = job.status != JobStatus.failed.value
        job.status = JobStatus.failed.value
        job.error_code = error_code
        job.updated_at = utc_now()
        if ending:
            plan_job_finished(session, [job], job.updated_at, delivery_window)
        session.commit()
    return job


def _priority_group() -> ColumnElement[int]:
    """`domain.listing.priority_group` in SQL (over jobs outer-joined to their reports)."""
    awaiting = and_(Job.status == JobStatus.done.value, Report.review_state == ReviewState.unreviewed.value)
    return case(
        (and_(awaiting, Report.triage_level == "urgent"), PRIORITY_UNREVIEWED_URGENT),
        (awaiting, PRIORITY_UNREVIEWED),
        else_=PRIORITY_REST,
    )


def list_jobs(
    session: Session,
    tenant_id: str,
    filters: ReportFilters,
    limit: int,
    after: tuple[datetime, str] | PriorityPosition | None = None,
    sort: ReportSort = ReportSort.newest,
) -> list[Job]:
    """Up to `limit` of the tenant's jobs in the `sort` order, strictly after the cursor position
    (a (created_at, id) pair for `newest`, a PriorityPosition for `priority`)."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if filters.patient_ref is not None:
        stmt = stmt.where(Job.patient_ref == filters.patient_ref)
    if filters.status is not None:
        stmt = stmt.where(Job.status == filters.status.value)
    report_filtered = (
        filters.triage_level is not None
        or filters.ood_decision is not None
        or filters.review_state is not None
    )
    if report_filtered:
        stmt = stmt.join(Report, Report.job_id == Job.id)
    elif sort == ReportSort.priority:
        stmt = stmt.outerjoin(Report, Report.job_id == Job.id)
    if filters.triage_level is not None:
        stmt = stmt.where(Report.triage_level == filters.triage_level)
    if filters.ood_decision is not None:
        stmt = stmt.where(Report.ood_decision == filters.ood_decision.value)
    if filters.review_state is not None:
        stmt = stmt.where(Report.review_state == filters.review_state.value)
    if filters.since is not None:
        stmt = stmt.where(Job.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(Job.created_at < filters.until)
    if sort == ReportSort.priority:
        group = _priority_group()
        if isinstance(after, PriorityPosition):
            stmt = stmt.where(
                or_(
                    group > after.group,
                    and_(
                        group == after.group,
                        or_(
                            Job.created_at > after.created_at,
                            and_(Job.created_at == after.created_at, Job.id > after.job_id),
                        ),
                    ),
                )
            )
        stmt = stmt.order_by(group, Job.created_at, Job.id).limit(limit)
        return list(session.scalars(stmt))
    if isinstance(after, tuple):
        created_at, job_id = after
        stmt = stmt.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(stmt))
