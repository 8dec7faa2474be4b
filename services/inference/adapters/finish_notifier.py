"""Publishes `contracts.notifications.JobFinished` for jobs that reached a final state, so that a
gateway waiting on one (`Prefer: wait`) wakes at once. Best effort: a notification that cannot be
sent is logged and dropped, and the waiting gateway finds the result by its fallback poll."""

from __future__ import annotations

import logging
from typing import Protocol

import redis

from contracts.jobs import JobStatus
from contracts.notifications import JOB_FINISHED_CHANNEL, JobFinished, notifies_over
from contracts.reports import JobView

log = logging.getLogger("services.inference.finish_notifier")
_SOCKET_TIMEOUT_S = 2.0


class FinishNotifier(Protocol):
    """Tells whoever waits that jobs finished."""

    def notify(self, finished: list[JobFinished]) -> None:
        """Publish one message per job; never raises."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class RedisFinishNotifier:
    """`FinishNotifier` over Redis PUBLISH on the broker's server (one round trip per call)."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=_SOCKET_TIMEOUT_S, socket_connect_timeout=_SOCKET_TIMEOUT_S
        )

    def notify(self, finished: list[JobFinished]) -> None:
        if not finished:
            return
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for message in finished:
                    pipe.publish(JOB_FINISHED_CHANNEL, message.model_dump_json())
                pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "jobs.finished_not_notified", extra={"jobs": len(finished), "error": type(exc).__name__}
            )

    def close(self) -> None:
        self._redis.close()


class NoFinishNotifier:
    """For a broker without pub/sub (the embedded SQLite one): gateways poll instead."""

    def notify(self, finished: list[JobFinished]) -> None:
        return None

    def close(self) -> None:
        return None


def finish_notifier(broker_url: str) -> FinishNotifier:
    """The notifier a worker on this broker uses."""
    return RedisFinishNotifier(broker_url) if notifies_over(broker_url) else NoFinishNotifier()


def finished(job_id: str, tenant_id: str, status: JobStatus | str, job: JobView | None = None) -> JobFinished:
    """One job's notification (with the stored job when it is at hand and final)."""
    final = job if job is not None and job.job_id == job_id and job.status == JobStatus(status) else None
    return JobFinished(job_id=job_id, tenant_id=tenant_id, status=JobStatus(status), job=final)
