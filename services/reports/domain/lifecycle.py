"""Job status transitions: queued -> running -> done | rejected | failed."""

from __future__ import annotations

from contracts.jobs import JobStatus

# A stored result is final: a late failure or a redelivered "running" never overwrites it.
FINAL_STATUSES = frozenset({JobStatus.done, JobStatus.rejected})
REPORT_STATUSES = FINAL_STATUSES


def may_mark_running(current: JobStatus) -> bool:
    """Only a queued job starts running; later states are never moved backwards."""
    return current == JobStatus.queued


def may_mark_failed(current: JobStatus) -> bool:
    """A failure never overrides a finished (done or rejected) job."""
    return current not in FINAL_STATUSES
