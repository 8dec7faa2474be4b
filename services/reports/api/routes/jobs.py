"""Job registration, status changes from the worker, and reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Request, Response, status
from sqlalchemy.orm import Session

from contracts.errors import DomainError, error_detail
from contracts.jobs import JobCreate
from contracts.reports import (
    JobCreateBatch,
    JobCreateBatchResult,
    JobCreateOutcome,
    JobFailure,
    JobLease,
    JobsRunning,
    JobsRunningResult,
    JobStatuses,
    JobStatusQuery,
    JobView,
)
from contracts.users import Actor
from services.common.errors import DependencyUnavailableError
from services.common.request_context import seconds_waiting
from services.reports.api.checks import check_job_id, check_lengths, check_tenant
from services.reports.api.deps import (
    NO_STORE,
    ActorDep,
    SessionDep,
    SettingsDep,
    TenantDep,
    internal_router,
    wake_dispatcher,
)
from services.reports.api.views import job_view
from services.reports.db.audit import record_read
from services.reports.db.jobs import (
    create_job,
    create_jobs,
    fail_unqueued,
    get_job,
    get_job_image,
    mark_failed,
    mark_many_running,
    mark_running,
    requeue,
    statuses_of,
)
from services.reports.db.reports import get_heatmap
from services.reports.domain.payloads import decode_image

router = internal_router("jobs")

JobId = Annotated[str, Path(min_length=1, max_length=64)]
IDEMPOTENT_REPLAY_HEADER = "Idempotent-Replay"

# Column sizes that JobCreate itself does not bound.
_MAX_LENGTHS = {"job_id": 64, "batch_id": 64, "idempotency_key": 255, "filename": 255}


REGISTRATION_TIMEOUT = "registration.timeout"


def _refuse_late(request: Request, session: Session, created: list[JobCreate]) -> None:
    """Registrations committed after their caller stopped waiting (`register_within_ms`: a hung
    database, a long pool wait) were answered as errors to the client, and the gateway never
    queued them: they are failed `registration.timeout` (an Idempotency-Key retry re-queues
    them) rather than left queued for the sweeper to run without the client knowing."""
    limits = [job.register_within_ms for job in created if job.register_within_ms is not None]
    if not limits or 1000 * seconds_waiting(request.state) <= min(limits):
        return
    fail_unqueued(session, [job.job_id for job in created], REGISTRATION_TIMEOUT)
    raise DependencyUnavailableError(
        "the registration took longer than the caller waits", {"dependency": "database"}
    )


@router.post("/internal/v1/jobs", status_code=status.HTTP_201_CREATED)
def register_job(
    body: JobCreate,
    tenant: TenantDep,
    session: SessionDep,
    request: Request,
    response: Response,
    actor: ActorDep,
) -> JobView:
    """Register a job (201). A repeated idempotency key or job id returns the original job (200,
    `Idempotent-Replay: true`), so the gateway queues nothing twice. A registration that took
    longer than `register_within_ms` is failed `registration.timeout` and answered 503."""
    job, replay = _register(body, tenant, session, actor)
    if not replay:
        _refuse_late(request, session, [body])
    else:
        response.status_code = status.HTTP_200_OK
        response.headers[IDEMPOTENT_REPLAY_HEADER] = "true"
    return job


def _register(body: JobCreate, tenant: str, session: Session, actor: Actor | None) -> tuple[JobView, bool]:
    """The job registered (or found again: a replay, flag True), naming the user who submitted
    it; DomainError when refused."""
    image = _checked_image(body, tenant)
    job, created = create_job(session, tenant, body, image, actor)
    return job_view(job), not created


def _checked_image(body: JobCreate, tenant: str) -> bytes:
    """The registration's image bytes, once its tenant, lengths and image are checked."""
    check_tenant(body.tenant_id, tenant)
    check_lengths(
        {
            "job_id": body.job_id,
            "batch_id": body.batch_id,
            "idempotency_key": body.idempotency_key,
            "filename": body.filename,
        },
        _MAX_LENGTHS,
    )
    return decode_image(body.image)


@router.post("/internal/v1/jobs/bulk")
def register_jobs(
    body: JobCreateBatch, tenant: TenantDep, session: SessionDep, request: Request, actor: ActorDep
) -> JobCreateBatchResult:
    """Register a batch's jobs in one call (the gateway's batch upload), each exactly as
    `POST /internal/v1/jobs` would, replays included; one the single route would refuse gets that
    error in its place and the others are registered all the same. The valid ones are written in
    one transaction; if that fails, each is registered on its own to find who fails. Late
    registrations are refused as a whole, as `POST /internal/v1/jobs` refuses one."""
    outcomes: list[JobCreateOutcome | None] = []
    valid: list[tuple[int, JobCreate, bytes]] = []
    for job in body.jobs:
        try:
            valid.append((len(outcomes), job, _checked_image(job, tenant)))
            outcomes.append(None)
        except DomainError as exc:
            outcomes.append(JobCreateOutcome(error=error_detail(exc)))
    try:
        created = create_jobs(session, tenant, [(job, image) for _, job, image in valid], actor)
        for (index, _, _), (row, new) in zip(valid, created, strict=True):
            outcomes[index] = JobCreateOutcome(job=job_view(row), replayed=not new)
    except DomainError:
        session.rollback()
        for index, job, _ in valid:
            try:
                view, replay = _register(job, tenant, session, actor)
                outcomes[index] = JobCreateOutcome(job=view, replayed=replay)
            except DomainError as exc:
                session.rollback()
                outcomes[index] = JobCreateOutcome(error=error_detail(exc))
    new_ids = {o.job.job_id for o in outcomes if o is not None and o.job is not None and not o.replayed}
    _refuse_late(request, session, [job for _, job, _ in valid if job.job_id in new_ids])
    return JobCreateBatchResult(results=[o for o in outcomes if o is not None])


@router.get("/internal/v1/jobs/{job_id}")
def read_job(job_id: JobId, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> JobView:
    """A job with its result when finished; 404 job.not_found for another tenant's job. A user's
    read of a result is audited (`report.read`)."""
    view = job_view(get_job(session, tenant, job_id))
    if view.result is not None:
        record_read(
            session,
            tenant_id=tenant,
            actor=actor,
            action="report.read",
            resource_type="job",
            resource_id=job_id,
        )
    return view


@router.get(
    "/internal/v1/jobs/{job_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
)
def read_job_image(job_id: JobId, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> Response:
    """The stored (stripped, re-encoded) image; a user's read is audited (`image.read`)."""
    data, media_type = get_job_image(session, tenant, job_id)
    record_read(
        session, tenant_id=tenant, actor=actor, action="image.read", resource_type="job", resource_id=job_id
    )
    return Response(content=data, media_type=media_type, headers=NO_STORE)


@router.get(
    "/internal/v1/jobs/{job_id}/heatmap.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def read_job_heatmap(job_id: JobId, tenant: TenantDep, session: SessionDep, actor: ActorDep) -> Response:
    """The class-activation heatmap; 404 heatmap.not_found when the job has none. A user's read
    is audited (`heatmap.read`)."""
    heatmap = get_heatmap(session, tenant, job_id)
    record_read(
        session, tenant_id=tenant, actor=actor, action="heatmap.read", resource_type="job", resource_id=job_id
    )
    return Response(content=heatmap, media_type="image/png", headers=NO_STORE)


@router.post("/internal/v1/jobs/running")
def jobs_running(
    body: JobsRunning, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> JobsRunningResult:
    """A worker's micro-batch started (or is tried again): each queued or running job among them
    becomes running with a lease of `lease_seconds` (one UPDATE); unknown ids, other tenants' jobs
    and finished or failed jobs are left as they are. `finished` names those that already have
    their result, which the worker then skips."""
    lease = body.lease_seconds or settings.default_lease_seconds
    changed, finished, busy = mark_many_running(session, tenant, body.job_ids, lease, body.runner)
    return JobsRunningResult(changed=changed, finished=finished, busy=busy)


@router.post("/internal/v1/jobs/statuses")
def job_statuses(body: JobStatusQuery, tenant: TenantDep, session: SessionDep) -> JobStatuses:
    """The status of each named job of the tenant, in one query (no result, so no audit entry: a
    gateway asks it for the waits it holds, then reads each finished job once, as a user read)."""
    return JobStatuses(statuses=statuses_of(session, tenant, body.job_ids))


@router.post("/internal/v1/jobs/{job_id}/running")
def job_running(
    job_id: JobId, tenant: TenantDep, session: SessionDep, settings: SettingsDep, body: JobLease | None = None
) -> JobView:
    """The worker started the job, or tries it again: queued or running -> running, with a lease
    of `lease_seconds` (a no-op for a finished or failed job)."""
    lease = (body.lease_seconds if body else None) or settings.default_lease_seconds
    return job_view(mark_running(session, tenant, job_id, lease, body.runner if body else None))


@router.post("/internal/v1/jobs/{job_id}/requeue")
def job_requeue(job_id: JobId, tenant: TenantDep, session: SessionDep) -> JobView:
    """A retried request is about to queue a job that was never queued (failed with one of
    `contracts.jobs.UNQUEUED_ERROR_CODES`): it is queued again. Any other job is answered as it is."""
    return job_view(requeue(session, tenant, job_id))


@router.post("/internal/v1/jobs/{job_id}/fail")
def job_failed(
    job_id: JobId,
    body: JobFailure,
    tenant: TenantDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
) -> JobView:
    """The worker gave up; a job that is already done or rejected keeps its result."""
    check_tenant(body.tenant_id, tenant)
    check_job_id(body.job_id, job_id)
    check_lengths({"error_code": body.error_code}, {"error_code": 64})
    job = mark_failed(session, tenant, job_id, body.error_code, settings.delivery_window)
    wake_dispatcher(request, session)
    return job_view(job)
