"""Gateway <-> reports: API-key verification and batch registration (additive to jobs/reports)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from contracts.jobs import BatchCounts
from contracts.reports import JobView
from contracts.users import Role


class ApiKeyVerifyRequest(BaseModel):
    """Gateway -> reports: the raw key a client presented as `Authorization: Bearer ...`."""

    api_key: str = Field(min_length=1, max_length=256)


class ApiKeyVerifyResponse(BaseModel):
    """Which tenant, user and key an API key belongs to, and the user's role."""

    tenant_id: str
    key_id: str
    user_id: str
    user_name: str
    role: Role


class BatchCreate(BaseModel):
    """Gateway -> reports: register a batch before its jobs."""

    batch_id: str = Field(min_length=1, max_length=64)
    client_ref: str | None = Field(default=None, max_length=128)
    total: int = Field(ge=1, description="number of images submitted in the batch")


class BatchView(BaseModel):
    """A batch, its progress and its jobs (oldest first)."""

    batch_id: str
    client_ref: str | None = None
    created_at: datetime
    counts: BatchCounts
    items: list[JobView]
