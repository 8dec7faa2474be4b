"""The sweeper's reads and writes (services/reports/sweeper.py): jobs whose task is presumed
lost, claimed under row locks so that several reports replicas can sweep at once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session, undefer

from contracts.jobs import JobStatus
from services.reports.db.models import Job

ABANDONED = "job.abandoned"


def _claim(session: Session, stmt: Select[Job], limit: int) -> list[Job]:
    """Rows of `stmt` locked for this transaction; rows another replica's sweep holds are skipped
    (PostgreSQL `FOR UPDATE SKIP LOCKED`; SQLite, one writer at a time, has no row locks and
    SQLAlchemy leaves the clause out). The image comes along: a re-published task carries it."""
    if limit <= 0:
        return []
    locked = stmt.options(undefer(Job.image)).limit(limit).with_for_update(skip_locked=True)
    return list(session.scalars(locked))


def expired_leases(session: Session, now: datetime, limit: int) -> list[Job]:
    """Running jobs whose worker's lease ran out (the worker died, or could not record an end)."""
    stmt = (
        select(Job)
        .where(Job.status == JobStatus.running.value, Job.lease_expires_at < now)
        .order_by(Job.lease_expires_at)
    )
    return _claim(session, stmt, limit)


def stale_queued(session: Session, enqueued_before: datetime, limit: int) -> list[Job]:
    """Jobs queued since before `enqueued_before` (the caller knows the queue holds no message)."""
    stmt = (
        select(Job)
        .where(Job.status == JobStatus.queued.value, Job.enqueued_at < enqueued_before)
        .order_by(Job.enqueued_at)
    )
    return _claim(session, stmt, limit)


def take_back(jobs: list[Job], now: datetime, max_redrives: int) -> tuple[list[Job], list[Job]]:
    """Claimed jobs back to `queued` for re-publication (redrives + 1), except those re-published
    `max_redrives` times already, which are failed `job.abandoned` (a job that kills every worker
    that takes it must not circulate forever). Returns (re-queued, abandoned); the caller commits."""
    requeued, abandoned = [], []
    for job in jobs:
        job.updated_at = now
        job.lease_expires_at = None
        job.lease_owner = None
        if job.redrives >= max_redrives:
            job.status, job.error_code = JobStatus.failed.value, ABANDONED
            abandoned.append(job)
        else:
            job.status, job.enqueued_at, job.redrives = JobStatus.queued.value, now, job.redrives + 1
            requeued.append(job)
    return requeued, abandoned
