"""Register a validated image as a job with reports, then queue it: shared by images and batches."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from fastapi import Response

from contracts.errors import DomainError
from contracts.jobs import (
    FINISHED_STATUSES,
    UNQUEUED_ERROR_CODES,
    DicomRef,
    ImageMetadata,
    InferenceTask,
    JobCreate,
    JobStatus,
    StoredImage,
)
from contracts.notifications import JobFinished
from contracts.public import JobAccepted
from contracts.reports import JobFailure, JobView
from services.gateway.adapters.finish_listener import Waiters
from services.gateway.adapters.reports_client import ReportsClient
from services.gateway.api.deps import GatewayContext
from services.gateway.domain.auth import Principal, current_actor

logger = logging.getLogger(__name__)

_FIRST_POLL_SECONDS = 0.05
_MAX_POLL_SECONDS = 1.0
# Polling (no notifications): every 50 ms for the first second, when most jobs finish (backing
# off from the first poll put the embedded fleet's 1-client p50 at ~185 ms), then doubling.
_STEADY_POLL_SECONDS = 1.0
# With notifications, a read this often anyway: a notification lost while the listener was
# reconnecting delays the answer by at most this much.
_FALLBACK_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Submitted:
    """A registered job, and whether reports answered it as a replay of an earlier request."""

    job: JobView
    replayed: bool


@dataclass(frozen=True)
class Registration:
    """One single submission on its way to reports and the queue (`GatewayContext.registrations`
    groups concurrent ones: `services.gateway.domain.group_commit`)."""

    context: GatewayContext
    job: JobCreate
    request_id: str
    awaited: bool  # the request waits for the result (`Prefer: wait`)


# What the jobs of one registration call share: the tenant and the acting user (the actor header).
RegistrationKey = tuple[str, str | None]


def new_id() -> str:
    """A fresh job or batch id: 32 lowercase hex characters."""
    return uuid.uuid4().hex


def batch_id_for(tenant_id: str, idempotency_key: str) -> str:
    """The batch id a tenant's Idempotency-Key always maps to (32 hex characters).

    reports makes batch registration idempotent on the batch id, so a repeated batch request
    finds its batch again through this id, and its jobs through the keys `<key>:<index>`.
    """
    return hashlib.sha256(f"{tenant_id}\x00{idempotency_key}".encode()).hexdigest()[:32]


# What a job whose task the broker refused is failed with (one of UNQUEUED_ERROR_CODES).
UNQUEUED_ERROR_CODE = "queue.unavailable"


async def replay_task(
    context: GatewayContext,
    job: JobView,
    tenant_id: str,
    image: StoredImage,
    metadata: ImageMetadata,
    request_id: str,
    awaited: bool = False,
) -> tuple[JobView, InferenceTask | None]:
    """For an Idempotency-Key retry: a job failed with one of UNQUEUED_ERROR_CODES never reached
    the broker (its publish failed, or its registration outlasted this gateway's patience), so it is
    set back to queued and its task returned to queue now; any other job as it is, and None. A job
    still `queued` is left to its message, or to the reports sweeper when that message was lost
    (re-publishing it on every replay would duplicate work for nothing)."""
    if job.status != JobStatus.failed or job.error_code not in UNQUEUED_ERROR_CODES:
        return job, None
    job = await context.reports.requeue_job(tenant_id, job.job_id, request_id=request_id)
    if job.status != JobStatus.queued:
        return job, None
    return job, inference_task(job, tenant_id, image, metadata, request_id, awaited=awaited)


def job_create(
    principal: Principal,
    image: StoredImage,
    metadata: ImageMetadata,
    filename: str | None,
    idempotency_key: str | None,
    batch_id: str | None,
    dicom: DicomRef | None = None,
) -> JobCreate:
    """What reports registers for one validated image (a fresh job id)."""
    return JobCreate(
        job_id=new_id(),
        tenant_id=principal.tenant_id,
        batch_id=batch_id,
        idempotency_key=idempotency_key,
        metadata=metadata,
        image=image,
        filename=filename,
        dicom=dicom,
    )


def inference_task(
    job: JobView,
    tenant_id: str,
    image: StoredImage,
    metadata: ImageMetadata,
    request_id: str,
    *,
    awaited: bool = False,
) -> InferenceTask:
    """The task message of a newly registered job."""
    return InferenceTask(
        job_id=job.job_id,
        tenant_id=tenant_id,
        request_id=request_id,
        image=image,
        submitted_at=datetime.now(UTC),
        # Only what a model may fuse: identifiers (patient_ref, client_ref) stay out of the broker.
        clinical=metadata.clinical(),
        track_lesion=job.metadata.lesion_id is not None,
        awaited=awaited,
    )


async def submit_job(
    context: GatewayContext,
    *,
    principal: Principal,
    image: StoredImage,
    metadata: ImageMetadata,
    filename: str | None,
    idempotency_key: str | None,
    batch_id: str | None,
    request_id: str,
    dicom: DicomRef | None = None,
    awaited: bool = False,
) -> Submitted:
    """Register the job and queue its task when reports says it is new; a replay queues only a
    job that never reached the queue (`replay_task`). Concurrent submissions of one tenant and
    user are registered and queued together (`register_group`)."""
    registration = Registration(
        context,
        job_create(principal, image, metadata, filename, idempotency_key, batch_id, dicom),
        request_id,
        awaited,
    )
    actor = current_actor.get()
    key: RegistrationKey = (principal.tenant_id, actor.to_header() if actor is not None else None)
    return await context.registrations.submit(key, registration)


async def register_group(items: list[Registration]) -> list[Submitted | BaseException]:
    """Register and queue concurrent single submissions of one tenant and user (`GroupCommit`'s
    runner): one alone as before; several with one bulk registration and one chunk message (one
    worker micro-batch), each with its own outcome. A registration reports refuses is tried again
    alone, so that its request fails exactly as it would alone (nothing was written for it)."""
    if len(items) == 1:
        return [await _register_one(items[0])]
    context = items[0].context
    outcomes = await context.reports.create_jobs(
        [item.job for item in items], tenant_id=items[0].job.tenant_id, request_id=items[0].request_id
    )
    results: list[Submitted | BaseException] = []
    queued: list[tuple[int, InferenceTask]] = []
    for item, outcome in zip(items, outcomes, strict=True):
        if outcome.job is None:
            try:
                results.append(await _register_one(item))
            except DomainError as exc:
                results.append(exc)
            continue
        job, task = await _job_and_task(item, outcome.job, outcome.replayed)
        if task is not None:
            queued.append((len(results), task))
        results.append(Submitted(job, replayed=outcome.replayed))
    if queued:
        try:
            await queue_tasks(context, [task for _, task in queued], request_id=items[0].request_id)
        except DomainError as exc:
            for index, _ in queued:
                results[index] = exc
    return results


async def _job_and_task(
    item: Registration, job: JobView, replayed: bool
) -> tuple[JobView, InferenceTask | None]:
    """A registered job and the task to queue for it: a new job's, or what `replay_task` says."""
    registered = item.job
    if replayed:
        return await replay_task(
            item.context,
            job,
            registered.tenant_id,
            registered.image,
            registered.metadata,
            item.request_id,
            item.awaited,
        )
    task = inference_task(
        job,
        registered.tenant_id,
        registered.image,
        registered.metadata,
        item.request_id,
        awaited=item.awaited,
    )
    return job, task


async def _register_one(item: Registration) -> Submitted:
    """One submission registered and queued on its own."""
    job, replayed = await item.context.reports.create_job(item.job, request_id=item.request_id)
    job, task = await _job_and_task(item, job, replayed)
    if task is not None:
        await queue_tasks(item.context, [task], request_id=item.request_id)
    return Submitted(job, replayed=replayed)


async def answer_submitted(
    response: Response,
    context: GatewayContext,
    submitted: Submitted,
    *,
    tenant_id: str,
    wait: int,
    request_id: str,
) -> JobAccepted | JobView:
    """A single submission's answer: 202 with the job's `status_url` (and `Location`), or, with
    `Prefer: wait=N` (`wait` > 0) and the job finished within it, 200 with the finished job."""
    job = submitted.job
    status_url = f"/v1/jobs/{job.job_id}"
    response.headers["Location"] = status_url
    if submitted.replayed:
        response.headers["Idempotent-Replay"] = "true"
    if wait > 0:
        response.headers["Preference-Applied"] = f"wait={wait}"
        finished = await wait_for_finish(
            context.reports,
            job=job,
            tenant_id=tenant_id,
            seconds=wait,
            request_id=request_id,
            listener=context.finish_listener,
        )
        if finished is not None:
            response.status_code = 200
            return finished
    return JobAccepted(job_id=job.job_id, status=job.status, status_url=status_url)


async def queue_tasks(context: GatewayContext, tasks: list[InferenceTask], *, request_id: str) -> None:
    """Queue registered jobs: one `inference.predict` message for one job, one
    `inference.predict_chunk` message for several (the worker runs them as one micro-batch).
    If the broker refuses, each job is marked failed (`queue.unavailable`) and the error raised."""
    try:
        if len(tasks) == 1:
            await context.publisher.publish(tasks[0])
        else:
            await context.publisher.publish_many(tasks)
    except DomainError:
        for task in tasks:
            await _record_unqueued(context.reports, task.job_id, task.tenant_id, request_id)
        raise
    context.metrics.tasks_published.inc(len(tasks))
    context.metrics.task_messages.inc()


_T = TypeVar("_T")


def chunks(tasks: list[_T], size: int) -> list[list[_T]]:
    """`tasks` in order, cut into runs of at most `size`, as even as possible (33 jobs at 16 are
    11 + 11 + 11, not 16 + 16 + 1), so no worker gets a straggler chunk of one."""
    if not tasks:
        return []
    count = -(-len(tasks) // max(1, size))
    base, extra = divmod(len(tasks), count)
    cut: list[list[_T]] = []
    start = 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        cut.append(tasks[start:end])
        start = end
    return cut


async def _record_unqueued(reports: ReportsClient, job_id: str, tenant_id: str, request_id: str) -> None:
    """A registered job whose task never reached the broker would stay `queued` forever: mark
    it failed so pollers see an end state (a retry needs a new Idempotency-Key)."""
    failure = JobFailure(
        job_id=job_id,
        tenant_id=tenant_id,
        error_code=UNQUEUED_ERROR_CODE,
        message="the task queue was unavailable when the job was submitted",
    )
    try:
        await reports.fail_job(failure, request_id=request_id)
    except DomainError:
        logger.error(
            "job registered but neither queued nor marked failed",
            extra={"request_id": request_id, "job_id": job_id},
        )


async def wait_for_finish(
    reports: ReportsClient,
    *,
    job: JobView,
    tenant_id: str,
    seconds: int,
    request_id: str,
    listener: Waiters | None = None,
) -> JobView | None:
    """Wait until the job is done/rejected/failed or `seconds` pass; None on timeout.

    With a connected `listener` the wait is woken by the job's finished notification, which
    carries the stored job (else the job is read once), plus a read every
    `_FALLBACK_POLL_SECONDS` in case a notification was lost;
    without one it polls reports (50 ms, doubling to 1 s). The job is already accepted, so a
    failing read ends the wait instead of failing the request.
    """
    if job.status in FINISHED_STATUSES:
        return job
    deadline = time.monotonic() + seconds
    if listener is None or not listener.connected:
        return await _poll_until_finished(reports, job, tenant_id, deadline, request_id)
    with listener.waiting(job.job_id, tenant_id) as waiter:
        while (remaining := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.event.wait(), min(_FALLBACK_POLL_SECONDS, remaining))
            waiter.event.clear()
            if (told := _told_job(waiter.message, tenant_id)) is not None:
                return told  # the worker sent the stored job: no read needed
            current = await _read(reports, job.job_id, tenant_id, request_id)
            if current is None or current.status in FINISHED_STATUSES:
                return current
    return None


def _told_job(message: JobFinished | None, tenant_id: str) -> JobView | None:
    """The finished job a notification carries, if it carries one for this tenant."""
    if message is None or message.job is None or message.tenant_id != tenant_id:
        return None
    return message.job if message.job.status in FINISHED_STATUSES else None


async def _poll_until_finished(
    reports: ReportsClient, job: JobView, tenant_id: str, deadline: float, request_id: str
) -> JobView | None:
    delay = _FIRST_POLL_SECONDS
    steady_until = time.monotonic() + _STEADY_POLL_SECONDS
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(delay, remaining))
        if time.monotonic() >= steady_until:
            delay = min(delay * 2, _MAX_POLL_SECONDS)
        current = await _read(reports, job.job_id, tenant_id, request_id)
        if current is None or current.status in FINISHED_STATUSES:
            return current
    return None


async def _read(reports: ReportsClient, job_id: str, tenant_id: str, request_id: str) -> JobView | None:
    """The job now; None (and a warning) when reports cannot say."""
    try:
        return await reports.get_job(tenant_id, job_id, request_id=request_id)
    except DomainError as exc:
        logger.warning(
            "wait poll failed", extra={"request_id": request_id, "job_id": job_id, "error_code": exc.code}
        )
        return None
