"""Batch registration and progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response, status

from contracts.records import BatchCreate, BatchView
from services.reports.api.deps import SessionDep, TenantDep, internal_router
from services.reports.api.views import batch_view
from services.reports.db.batches import batch_counts, batch_jobs, create_batch, get_batch

router = internal_router("batches")

BatchId = Annotated[str, Path(min_length=1, max_length=64)]


@router.post("/internal/v1/batches", status_code=status.HTTP_201_CREATED)
def register_batch(
    body: BatchCreate, tenant: TenantDep, session: SessionDep, response: Response
) -> BatchView:
    """Register a batch (201); the same id again returns the stored batch (200)."""
    batch, created = create_batch(session, tenant, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return batch_view(batch, batch_counts(session, batch), batch_jobs(session, batch))


@router.get("/internal/v1/batches/{batch_id}")
def read_batch(batch_id: BatchId, tenant: TenantDep, session: SessionDep) -> BatchView:
    """A batch's progress and jobs; 404 batch.not_found for another tenant's batch."""
    batch = get_batch(session, tenant, batch_id)
    return batch_view(batch, batch_counts(session, batch), batch_jobs(session, batch))
