"""Job-finished notifications: the inference worker publishes one message per job that reached a
final state (done, rejected, failed) on a Redis channel of the broker's server, and the gateway's
`Prefer: wait` is woken by it instead of polling reports. Only where the broker is Redis; with the
embedded SQLite broker the gateway polls (and it also polls, slowly, as a safety net for a message
lost while it was reconnecting)."""

from __future__ import annotations

from pydantic import BaseModel

from contracts.jobs import JobStatus
from contracts.reports import JobView

JOB_FINISHED_CHANNEL = "skintriage:jobs:finished"
REDIS_URL_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://")


class JobFinished(BaseModel):
    """The message body (JSON): which job of which tenant finished, and how; with `job`, the job
    as reports stored it (its public view, result included), so a waiting gateway can answer
    without reading it again. Only the worker that just stored it sends `job`."""

    job_id: str
    tenant_id: str
    status: JobStatus
    job: JobView | None = None


def notifies_over(broker_url: str) -> bool:
    """Whether a fleet on this broker URL has job-finished notifications (a Redis broker)."""
    return broker_url.startswith(REDIS_URL_SCHEMES)
