"""Celery task `inference.predict`: parse the message, run the pipeline, own the retries.

Transient failures (an internal service timed out, was unreachable or answered 5xx/429) are
retried with capped exponential backoff and jitter for `INFERENCE_RETRY_WINDOW_SECONDS` from the
first attempt (a time budget, not a count: a 5-minute outage is outlasted however the delays
fall). When the task fails for good (window spent, a permanent error such as a corrupt payload or
a 4xx, a soft time limit, or a bug) `on_failure` records the job as failed in the reports service
with a machine-readable error_code. If even that cannot be recorded, the job's lease runs out and
the reports sweeper takes it back, so no job is left queued or running forever.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from typing import Any, NoReturn, TypeVar

from billiard.einfo import ExceptionInfo
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from pydantic import ValidationError

from contracts.errors import DomainError
from contracts.jobs import InferenceChunk, InferenceTask, JobStatus
from contracts.reports import JobFailure
from contracts.tasks import (
    FIRST_ATTEMPT_KWARG,
    INFERENCE_CHUNK_TASK_NAME,
    INFERENCE_TASK_NAME,
    PAYLOAD_KWARG,
    REQUEST_ID_TASK_HEADER,
)
from services.common.request_id import bound_request_id, is_well_formed, new_request_id
from services.inference.adapters.finish_notifier import finished
from services.inference.celery_app import celery_app, settings
from services.inference.domain.errors import PayloadInvalidError, TransientError
from services.inference.domain.pipeline import (
    AlreadyFinishedError,
    AlreadyRunningError,
    run_chunk,
    run_job_stored,
)
from services.inference.resources import get_resources

log = logging.getLogger("services.inference.tasks")


_BodyT = TypeVar("_BodyT", InferenceTask, InferenceChunk)


def _parse_body(model: type[_BodyT], payload: object) -> _BodyT:
    """The message body as `model`; PayloadInvalidError (permanent) otherwise."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        locations = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        # `from None`: pydantic's message quotes the input, which holds the image.
        raise PayloadInvalidError(f"task payload is not an {model.__name__}", {"fields": locations}) from None


def parse_payload(payload: object) -> InferenceTask:
    """The message body as an InferenceTask; PayloadInvalidError (permanent) otherwise."""
    return _parse_body(InferenceTask, payload)


def _ids(payload: object, task_id: str | None) -> tuple[str | None, str | None, str | None]:
    """(job_id, tenant_id, request_id) from a payload that may itself be the corrupt part."""
    fields = payload if isinstance(payload, dict) else {}

    def text(key: str) -> str | None:
        value = fields.get(key)
        return value if isinstance(value, str) and value else None

    return text("job_id") or task_id, text("tenant_id"), text("request_id")


def header_request_id(request: Any) -> str | None:
    """The `request_id` task header: top-level on a worker's request, under `headers` when eager."""
    value = getattr(request, REQUEST_ID_TASK_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        REQUEST_ID_TASK_HEADER
    )
    return value if isinstance(value, str) and value else None


def task_request_id(payload_request_id: str | None, request: Any) -> str:
    """The task's request id: the payload's, else the task header's, when well formed; else a new
    one (the rule the HTTP services apply to X-Request-ID). Every log line of the task and every
    call it makes carries it."""
    for candidate in (payload_request_id, header_request_id(request)):
        if is_well_formed(candidate):
            return candidate
    return new_request_id()


def failure_code(exc: BaseException) -> tuple[str, str]:
    """(error_code, message) recorded for a job that failed with `exc`; no internals leak."""
    if isinstance(exc, DomainError):
        return exc.code, exc.message
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        return "task.timeout", "inference did not finish within its time limit"
    return "internal", "unexpected error in the inference worker"


def final_failure(exc: BaseException, retries: int) -> tuple[str, str]:
    """`failure_code` of the exception that ended a task, saying so when retries ran out."""
    code, message = failure_code(exc)
    if isinstance(exc, TransientError):
        message = f"gave up after {retries} retries in {settings.retry_window_seconds} s: {message}"
    return code, message


def record_failures(jobs: list[tuple[str, str]], code: str, message: str, request_id: str) -> None:
    """Record each (job_id, tenant_id) as failed with reports and announce those recorded; best
    effort, since reports may be what failed (reports never lets a failure override a result)."""
    recorded = []
    for job_id, tenant_id in jobs:
        failure = JobFailure(job_id=job_id, tenant_id=tenant_id, error_code=code, message=message)
        try:
            get_resources().reports.fail_job(failure, request_id=request_id)
        except Exception:
            log.exception("task.failure_not_recorded", extra={"job_id": job_id, "error_code": code})
            continue
        recorded.append(finished(job_id, tenant_id, JobStatus.failed))
    get_resources().finished.notify(recorded)


# Unix seconds; a module attribute so that tests can move time on.
clock = time.time

# Both tasks retry transient failures alike (`retry_transient`); the count is unbounded, the
# time is not.
_RETRIES: dict[str, Any] = {"max_retries": None}


def retry_delay(retries: int, base_seconds: float, cap_seconds: float) -> float:
    """The wait before retry number `retries + 1`: base * 2**retries, capped, then a random half of
    it dropped ("equal jitter": workers that failed together do not come back together, and no
    retry comes back at once)."""
    capped = min(float(cap_seconds), base_seconds * 2.0 ** min(retries, 30))
    return capped / 2 + random.uniform(0, capped / 2)


def retry_transient(task: Task, exc: TransientError, payload: dict[str, Any], started: float) -> NoReturn:
    """Retry the task later while the retry window from its first attempt (`started`, Unix
    seconds) allows; else raise `exc`, which fails the task (`on_failure` records it)."""
    delay = retry_delay(
        task.request.retries, settings.retry_backoff_seconds, settings.retry_backoff_max_seconds
    )
    if clock() + delay - started > settings.retry_window_seconds:
        raise exc
    raise task.retry(exc=exc, countdown=delay, kwargs={PAYLOAD_KWARG: payload, FIRST_ATTEMPT_KWARG: started})


def first_attempt(started: float | None) -> float:
    """When the task's first attempt began: carried by a retry, else now."""
    return started if started is not None else clock()


class PredictTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """Logs retries and records every final failure with the reports service."""

    def message_ids(
        self, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str | None, str | None, str]:
        """(job_id, tenant_id, request_id) of the message being handled, read defensively."""
        payload = (kwargs or {}).get(PAYLOAD_KWARG, args[0] if args else None)
        job_id, tenant_id, payload_request_id = _ids(payload, task_id)
        return job_id, tenant_id, task_request_id(payload_request_id, self.request)

    def on_retry(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Log the transient failure that will be retried."""
        _, _, request_id = self.message_ids(task_id, args, kwargs)
        code, message = failure_code(exc)
        log.warning(
            "task.retry",
            extra={
                "task_id": task_id,
                "request_id": request_id,
                "attempt": self.request.retries + 1,
                "error_code": code,
                "error": message,
            },
        )

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Record the job as failed; best effort, since the reports service may be what failed."""
        job_id, tenant_id, request_id = self.message_ids(task_id, args, kwargs)
        code, message = final_failure(exc, self.request.retries)
        with bound_request_id(request_id):
            log.error(
                "task.failed",
                exc_info=exc if code == "internal" else None,
                extra={"job_id": job_id, "tenant_id": tenant_id, "error_code": code},
            )
            if job_id is None or tenant_id is None:
                log.error("task.failure_unreportable", extra={"task_id": task_id, "error_code": code})
                return
            record_failures([(job_id, tenant_id)], code, message, request_id)


@celery_app.task(  # type: ignore[untyped-decorator]  # celery ships no type hints
    bind=True,
    base=PredictTask,
    name=INFERENCE_TASK_NAME,
    **_RETRIES,
)
def predict(
    self: PredictTask, payload: dict[str, Any], first_attempt_at: float | None = None
) -> dict[str, str]:
    """Run one job (task id = job id) and upsert its report; returns the job id and status."""
    started = first_attempt(first_attempt_at)
    job = parse_payload(payload)
    request_id = task_request_id(job.request_id, self.request)
    if request_id != job.request_id:
        job = job.model_copy(update={"request_id": request_id})
    with bound_request_id(request_id):
        resources = get_resources()
        try:
            report, stored = run_job_stored(
                job, resources.predictor, resources.ood, resources.reports, runner=self.request.id
            )
        except TransientError as exc:
            retry_transient(self, exc, payload, started)
        except AlreadyFinishedError as done:
            log.info(
                "task.skipped_finished",
                extra={"job_id": job.job_id, "tenant_id": job.tenant_id, "status": done.status.value},
            )
            return {"job_id": job.job_id, "status": done.status.value}
        except AlreadyRunningError:
            log.info("task.skipped_busy", extra={"job_id": job.job_id, "tenant_id": job.tenant_id})
            return {"job_id": job.job_id, "status": JobStatus.running.value}
        resources.finished.notify([finished(job.job_id, job.tenant_id, report.status, stored)])
        log.info(
            "task.done",
            extra={
                "job_id": job.job_id,
                "tenant_id": job.tenant_id,
                "attempt": self.request.retries,
                "status": report.status.value,
                "decision": report.ood.decision.value if report.ood else None,
                "timings_ms": report.timings_ms,
            },
        )
    return {"job_id": job.job_id, "status": report.status.value}


def parse_chunk(payload: object) -> InferenceChunk:
    """The message body as an InferenceChunk; PayloadInvalidError (permanent) otherwise."""
    return _parse_body(InferenceChunk, payload)


def chunk_jobs(payload: object) -> list[tuple[str, str]]:
    """(job_id, tenant_id) of every well-formed job in a chunk payload that may itself be corrupt."""
    tasks = payload.get("tasks") if isinstance(payload, dict) else None
    jobs = []
    for task in tasks if isinstance(tasks, list) else []:
        job_id, tenant_id, _ = _ids(task, None)
        if job_id and tenant_id:
            jobs.append((job_id, tenant_id))
    return jobs


class PredictChunkTask(PredictTask):
    """As PredictTask, for a micro-batch: a final failure is recorded for every job in it (reports
    never lets a failure override a job that already has its result)."""

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: ExceptionInfo,
    ) -> None:
        """Record each job of the chunk as failed; best effort, as for one job."""
        payload = (kwargs or {}).get(PAYLOAD_KWARG, args[0] if args else None)
        request_id = task_request_id(None, self.request)
        code, message = final_failure(exc, self.request.retries)
        jobs = chunk_jobs(payload)
        with bound_request_id(request_id):
            log.error(
                "task.chunk_failed",
                exc_info=exc if code == "internal" else None,
                extra={"task_id": task_id, "jobs": len(jobs), "error_code": code},
            )
            if not jobs:
                log.error("task.failure_unreportable", extra={"task_id": task_id, "error_code": code})
            record_failures(jobs, code, message, request_id)


@celery_app.task(  # type: ignore[untyped-decorator]  # celery ships no type hints
    bind=True,
    base=PredictChunkTask,
    name=INFERENCE_CHUNK_TASK_NAME,
    **_RETRIES,
)
def predict_chunk(
    self: PredictChunkTask, payload: dict[str, Any], first_attempt_at: float | None = None
) -> dict[str, Any]:
    """Run a micro-batch of one tenant's jobs (`inference.predict_chunk`); a transient failure
    retries the whole chunk, and every write it repeats is idempotent on the job id."""
    started = first_attempt(first_attempt_at)
    chunk = parse_chunk(payload)
    request_id = task_request_id(chunk.tasks[0].request_id, self.request)
    tasks = [t if t.request_id else t.model_copy(update={"request_id": request_id}) for t in chunk.tasks]
    with bound_request_id(request_id):
        resources = get_resources()
        try:
            outcomes = run_chunk(
                tasks, resources.predictor, resources.ood, resources.reports, runner=self.request.id
            )
        except TransientError as exc:
            retry_transient(self, exc, payload, started)
        resources.finished.notify([finished(o.job_id, tasks[0].tenant_id, o.status, o.job) for o in outcomes])
        statuses = Counter(outcome.status.value for outcome in outcomes)
        log.info(
            "task.chunk_done",
            extra={"jobs": len(outcomes), "attempt": self.request.retries, "statuses": dict(statuses)},
        )
    return {"jobs": len(outcomes), "statuses": dict(statuses)}
