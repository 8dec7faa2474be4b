"""Predictions and stored reports (inference worker -> reports service -> gateway/dashboard)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from contracts.bundle import TriageLevel
from contracts.jobs import ClinicalField, ImageMetadata, JobStatus
from contracts.ood import OodScoreResponse

DISCLAIMER = (
    "SkinTriage is decision support for trained clinicians, not a diagnosis. "
    "Results must be interpreted together with a clinical examination."
)


class ModelRef(BaseModel):
    """Which bundle produced a result."""

    name: str
    version: str
    sha256: str


class Prediction(BaseModel):
    """The model's output for one image, after calibration, triage and conformal prediction."""

    probabilities: dict[str, float] = Field(description="class code -> calibrated probability")
    top_class: str
    malignant_probability: float = Field(ge=0.0, le=1.0)
    triage_level: str = Field(description="urgent | routine | monitor")
    triage_threshold: float = Field(description="the threshold that decided the level")
    conformal_set: list[str]
    conformal_coverage: float
    metadata_used: list[ClinicalField] | None = Field(
        default=None,
        description="the clinical fields the model fused into this prediction: those the bundle "
        "uses, the request gave and the bundle's vocabulary recognised ([] = none: the model had "
        "only the image); None = an image-only model (or a report stored before this field existed)",
    )


class ReportUpsert(BaseModel):
    """Worker -> reports: the finished result for a job (idempotent on job_id)."""

    job_id: str
    tenant_id: str
    status: JobStatus
    prediction: Prediction | None = None
    ood: OodScoreResponse | None = None
    model: ModelRef
    heatmap_png_b64: str | None = None
    timings_ms: dict[str, float] = Field(default_factory=dict)
    error_code: str | None = None


class JobFailure(BaseModel):
    """Worker -> reports: a job given up after its retries."""

    job_id: str
    tenant_id: str
    error_code: str
    message: str


class JobView(BaseModel):
    """A job as the public API shows it: status plus, when finished, the result."""

    job_id: str
    batch_id: str | None = None
    status: JobStatus
    metadata: ImageMetadata
    created_at: datetime
    updated_at: datetime
    result: ReportView | None = None
    error_code: str | None = None


class ReportView(BaseModel):
    """A stored report. Rejected images carry the OOD verdict and no triage level."""

    job_id: str
    status: JobStatus
    triage_level: TriageLevel | None = None
    prediction: Prediction | None = None
    ood: OodScoreResponse | None = None
    model: ModelRef
    timings_ms: dict[str, float] = Field(default_factory=dict)
    has_heatmap: bool = False
    disclaimer: str = DISCLAIMER
    completed_at: datetime


class ReportPage(BaseModel):
    """One page of a cursor-paginated list, newest first."""

    items: list[JobView]
    next_cursor: str | None = None


JobView.model_rebuild()
