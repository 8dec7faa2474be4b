"""Batches and their progress."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from contracts.jobs import BatchCounts, JobStatus
from contracts.records import BatchCreate
from services.reports.db.models import Batch, Job
from services.reports.domain.errors import BatchConflictError, BatchNotFoundError


def _existing(session: Session, tenant_id: str, batch_id: str) -> Batch | None:
    batch = session.get(Batch, batch_id)
    if batch is not None and batch.tenant_id != tenant_id:
        raise BatchConflictError("batch id already in use", details={"batch_id": batch_id})
    return batch


def create_batch(session: Session, tenant_id: str, body: BatchCreate) -> tuple[Batch, bool]:
    """Register a batch; re-registering the same id returns the stored one (flag False)."""
    existing = _existing(session, tenant_id, body.batch_id)
    if existing is not None:
        return existing, False
    batch = Batch(id=body.batch_id, tenant_id=tenant_id, client_ref=body.client_ref, total=body.total)
    session.add(batch)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        existing = _existing(session, tenant_id, body.batch_id)
        if existing is None:
            raise
        return existing, False
    return batch, True


def get_batch(session: Session, tenant_id: str, batch_id: str) -> Batch:
    """The tenant's batch, or BatchNotFoundError (also for another tenant's batch)."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.tenant_id != tenant_id:
        raise BatchNotFoundError("no such batch", details={"batch_id": batch_id})
    return batch


def batch_jobs(session: Session, batch: Batch) -> list[Job]:
    """The batch's jobs in submission order, with their reports (image bytes not loaded)."""
    stmt = (
        select(Job)
        .where(Job.tenant_id == batch.tenant_id, Job.batch_id == batch.id)
        .order_by(Job.created_at, Job.id)
    )
    return list(session.scalars(stmt))


def batch_counts(session: Session, batch: Batch) -> BatchCounts:
    """How many of the batch's jobs are in each status; `total` is the declared size."""
    stmt = (
        select(Job.status, func.count())
        .where(Job.tenant_id == batch.tenant_id, Job.batch_id == batch.id)
        .group_by(Job.status)
    )
    per_status = {JobStatus(status).value: int(count) for status, count in session.execute(stmt)}
    return BatchCounts(total=batch.total, **per_status)
