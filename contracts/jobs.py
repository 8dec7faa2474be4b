"""Jobs and batches: what the gateway submits and what the inference worker receives."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class JobStatus(StrEnum):
    """Lifecycle: queued -> running -> done | rejected (OOD/quality) | failed (gave up)."""

    queued = "queued"
    running = "running"
    done = "done"
    rejected = "rejected"
    failed = "failed"


Sex = Literal["male", "female", "other", "unknown"]


class ImageMetadata(BaseModel):
    """Optional clinical context sent with an image. `patient_ref` is opaque to SkinTriage."""

    model_config = ConfigDict(extra="forbid")

    patient_ref: str | None = Field(default=None, max_length=128)
    body_site: str | None = Field(default=None, max_length=64)
    age: int | None = Field(default=None, ge=0, le=130)
    sex: Sex | None = None
    client_ref: str | None = Field(default=None, max_length=128)


class StoredImage(BaseModel):
    """An accepted upload after orientation fix, metadata stripping and compact re-encoding."""

    media_type: Literal["image/png", "image/jpeg"]
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    sha256: str
    data_b64: str = Field(description="base64 of the re-encoded bytes")


class JobCreate(BaseModel):
    """Gateway -> reports: register a job before it is queued."""

    job_id: str
    tenant_id: str
    batch_id: str | None = None
    idempotency_key: str | None = None
    metadata: ImageMetadata = Field(default_factory=ImageMetadata)
    image: StoredImage
    filename: str | None = None


class InferenceTask(BaseModel):
    """Celery message body for `inference.predict`: ids plus the compact image, never objects."""

    job_id: str
    tenant_id: str
    request_id: str | None = None
    image: StoredImage
    submitted_at: datetime


class BatchCounts(BaseModel):
    """Progress of a batch."""

    total: int = 0
    queued: int = 0
    running: int = 0
    done: int = 0
    rejected: int = 0
    failed: int = 0
