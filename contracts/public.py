"""Bodies of the gateway's public API that no other contract already describes.

Batch progress (`GET /v1/batches/{id}`) is `contracts.records.BatchView`, as reports answers it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import ErrorDetail
from contracts.jobs import JobStatus


class JobAccepted(BaseModel):
    """`POST /v1/images` -> 202: the job is registered and queued; poll `status_url`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "3f2c9a7e5b1d4e6f8a0b1c2d3e4f5a6b",
                    "status": "queued",
                    "status_url": "/v1/jobs/3f2c9a7e5b1d4e6f8a0b1c2d3e4f5a6b",
                }
            ]
        }
    )

    job_id: str
    status: JobStatus
    status_url: str


class BatchItemAccepted(BaseModel):
    """One upload of a batch that became a job."""

    index: int = Field(ge=0, description="position of the file in the upload (or the archive)")
    filename: str | None = None
    job_id: str


class BatchItemRejected(BaseModel):
    """One upload of a batch that failed validation; no job was created for it."""

    index: int = Field(ge=0, description="position of the file in the upload (or the archive)")
    filename: str | None = None
    error: ErrorDetail


class BatchAccepted(BaseModel):
    """`POST /v1/batches` -> 202. Every uploaded file is listed: in `items` or in `rejected`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "batch_id": "9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e",
                    "status_url": "/v1/batches/9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e",
                    "accepted": 1,
                    "rejected": [
                        {
                            "index": 1,
                            "filename": "notes.jpg",
                            "error": {"code": "image.unsupported_format", "message": "..."},
                        }
                    ],
                    "items": [
                        {
                            "index": 0,
                            "filename": "lesion-1.jpg",
                            "job_id": "3f2c9a7e5b1d4e6f8a0b1c2d3e4f5a6b",
                        }
                    ],
                }
            ]
        }
    )

    batch_id: str
    status_url: str
    accepted: int = Field(ge=0)
    rejected: list[BatchItemRejected]
    items: list[BatchItemAccepted]


class Health(BaseModel):
    """`/healthz` and `/readyz` (200). A failing `/readyz` answers 503 `dependency.unavailable`."""

    status: Literal["ok"] = "ok"
    checks: dict[str, str] = Field(default_factory=dict, description="dependency -> 'ok'")
