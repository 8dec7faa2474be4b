"""Job status transitions: queued -> running -> done | rejected | failed."""

from __future__ import annotations

from contracts.jobs import JobStatus

# A stored result is final: a late failure or a redelivered "running" never overwrites it.
FINAL_STATUSES = frozenset({JobStatus.done, JobStatus.rejected})
REPORT_STATUSES = FINAL_STATUSES
# Statuses a worker never runs a job in: its result stands, or it was given up (which the client
# may already have been told); only an explicit re-queue (an Idempotency-Key retry) runs it again.
ENDED_STATUSES = FINAL_STATUSES | {JobStatus.failed}
# Statuses mark-running acts on: a queued job starts running; a running one is tried again (its
# lease renewed). Ended jobs are never moved backwards.
RUNNABLE_STATUSES = frozenset({JobStatus.queued, JobStatus.running})


def may_mark_running(current: JobStatus) -> bool:
    """Whether mark-running moves (or renews) a job in `current` (RUNNABLE_STATUSES)."""
    return current in RUNNABLE_STATUSES


def may_mark_failed(current: JobStatus) -> bool:
    """A failure never overrides a finished (done or rejected) job."""
    return current not in FINAL_STATUSES
