"""Predictions and stored reports (inference worker -> reports service -> gateway/dashboard)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from contracts.bundle import TriageLevel
from contracts.errors import ErrorDetail
from contracts.jobs import ClinicalField, DicomRef, ImageMetadata, JobCreate, JobStatus
from contracts.ood import OodScoreResponse
from contracts.reviews import NextStep, ReviewState, ReviewView
from contracts.users import UserRef

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
    class_display_names: dict[str, str] = Field(
        default_factory=dict,
        description="class code -> the bundle's display name, for what clinicians read (reports, "
        "FHIR, PDF); {} for a report stored before this field existed",
    )

    malignant_classes: list[str] = Field(
        default_factory=list,
        description="the class codes the bundle counts as malignant (a reviewer's diagnosis naming one "
        "of the classes has a known malignancy); [] for a report stored before this field existed",
    )

    def display_name(self, code: str) -> str:
        """The bundle's name for a class code (the code itself when the report has none)."""
        return self.class_display_names.get(code, code)


# A feature map is a few cells a side (7x6 for 224x168 input); 64 bounds any bundle generously.
MAX_CAM_SIDE = 64
MAX_IMAGE_SIDE = 20_000


class HeatmapSource(BaseModel):
    """What the reports service needs to render a job's heatmap PNG when it is first asked for:
    the class-activation map quantised to one byte per cell (exactly as the PNG quantises it, so
    the PNG rendered later is byte-identical to one rendered in the worker), the image's size and
    where the image lay in the model's input (`model_bundle.preprocessing.Placement`). A few dozen
    bytes travel and are stored per job instead of a PNG of ~10 KiB encoded for every job."""

    rows: int = Field(ge=1, le=MAX_CAM_SIDE)
    cols: int = Field(ge=1, le=MAX_CAM_SIDE)
    cam_u8_b64: str = Field(
        max_length=4 * MAX_CAM_SIDE * MAX_CAM_SIDE, description="base64 of rows*cols bytes, row-major"
    )
    image_width: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    image_height: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    input_height: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    input_width: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    rotated: bool = Field(description="the image was turned 90 degrees clockwise to landscape first")
    left: float = Field(allow_inf_nan=False)
    top: float = Field(allow_inf_nan=False)
    width: float = Field(gt=0, allow_inf_nan=False)
    height: float = Field(gt=0, allow_inf_nan=False)


class ReportUpsert(BaseModel):
    """Worker -> reports: the finished result for a job (idempotent on job_id)."""

    job_id: str
    tenant_id: str
    status: JobStatus
    prediction: Prediction | None = None
    ood: OodScoreResponse | None = None
    model: ModelRef
    heatmap: HeatmapSource | None = Field(
        default=None, description="rendered to a PNG by the reports service on first request"
    )
    heatmap_png_b64: str | None = Field(
        default=None, description="a PNG rendered by the worker (workers before lazy heatmaps)"
    )
    timings_ms: dict[str, float] = Field(default_factory=dict)
    error_code: str | None = None
    # Issue 12: what comparing two images of one lesion needs (done reports only; None from
    # workers before it): the pooled embedding as little-endian float16 and the segmented lesion's
    # share of the image (model_bundle.segmentation). 16 384 base64 characters bound a 6 144-value
    # embedding (EfficientNet-Lite0's has 1 280); reports checks the decoded length.
    embedding_f16_b64: str | None = Field(
        default=None,
        max_length=16_384,
        description="base64 of the model's pooled embedding, little-endian float16",
    )
    # Range-checked by reports per report (payloads.check_report), so in a worker's batch a bad
    # value fails its own report only.
    lesion_area_fraction: float | None = Field(default=None, description="in [0, 1]")
    return_job: bool = Field(
        default=False,
        description="in a batch write (`PUT /internal/v1/reports`), answer the stored job in its "
        "outcome, as the single PUT always does (a request waits for it)",
    )


# Reports written, or jobs marked running, in one call (a worker's micro-batch).
MAX_REPORT_BATCH = 64


class ReportUpsertBatch(BaseModel):
    """Several jobs' results in one call (one tenant); each is stored, or refused, on its own."""

    reports: list[ReportUpsert] = Field(min_length=1, max_length=MAX_REPORT_BATCH)


class ReportUpsertOutcome(BaseModel):
    """One report's outcome: its job's status once stored, or the error a single
    `PUT /internal/v1/reports/{job_id}` would have answered for it."""

    job_id: str
    status: JobStatus | None = None
    error: ErrorDetail | None = None
    job: JobView | None = Field(default=None, description="the stored job, when the report asked for it")


class ReportUpsertBatchResult(BaseModel):
    """One outcome per report, in the request's order."""

    results: list[ReportUpsertOutcome]


class JobCreateBatch(BaseModel):
    """Gateway -> reports: several jobs of one batch registered in one call, each as
    `POST /internal/v1/jobs` would register it."""

    jobs: list[JobCreate] = Field(min_length=1, max_length=MAX_REPORT_BATCH)


class JobCreateOutcome(BaseModel):
    """One registration's outcome: the job (and whether it was an idempotent replay of an earlier
    one), or the error the single route would have answered for it."""

    job: JobView | None = None
    replayed: bool = False
    error: ErrorDetail | None = None


class JobCreateBatchResult(BaseModel):
    """One outcome per job, in the request's order."""

    results: list[JobCreateOutcome]


# The worker's hold on a running job: past `lease_expires_at` the reports sweeper takes the job
# back (queued again, its task re-published), since the worker that held it is presumed dead.
MAX_LEASE_SECONDS = 3600


class JobLease(BaseModel):
    """Worker -> reports: this job has started (queued -> running) or is being tried again (its
    lease renewed); the worker expects to finish or retry it within `lease_seconds`."""

    lease_seconds: int | None = Field(
        default=None, ge=1, le=MAX_LEASE_SECONDS, description="None: the reports service's default"
    )
    runner: str | None = Field(
        default=None,
        max_length=255,
        description="who holds the lease (the worker sends its Celery task id, which its retries "
        "keep): a running job whose live lease another runner holds is left to that runner, so two "
        "messages for one job (a retry waiting in a worker while the sweeper re-publishes) never "
        "both run it; None: any running job's lease is renewed (workers before leases had owners)",
    )


class JobsRunning(JobLease):
    """Worker -> reports: these jobs (one tenant) have started or are tried again (queued or
    running -> running with a fresh lease; ended jobs unchanged)."""

    job_ids: list[str] = Field(min_length=1, max_length=MAX_REPORT_BATCH)


# Jobs one status question may name (a gateway's waiting requests of one tenant).
MAX_STATUS_QUERY = 500


class JobStatusQuery(BaseModel):
    """Gateway -> reports: where are these jobs of one tenant now? (The waits of a gateway on a
    broker without notifications, asked together instead of one read per waiting request.)"""

    job_ids: list[str] = Field(min_length=1, max_length=MAX_STATUS_QUERY)


class JobStatuses(BaseModel):
    """Each named job of the tenant and its status; unknown ids and other tenants' jobs left out."""

    statuses: dict[str, JobStatus]


class JobsRunningResult(BaseModel):
    """How many of the jobs became running, and which have ended (done, rejected or failed: a
    redelivered task skips them)."""

    changed: int
    finished: dict[str, JobStatus] = Field(
        default_factory=dict, description="job id -> done | rejected | failed"
    )
    busy: list[str] = Field(
        default_factory=list,
        description="running under another runner's live lease: that runner finishes them (or its "
        "lease runs out and the sweeper takes them back); skip them",
    )


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
    dicom: DicomRef | None = Field(default=None, description="the DICOM instance the image came from")
    submitted_by: UserRef | None = Field(
        default=None, description="the user whose API key submitted the image (null before users existed)"
    )
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
    review: ReviewView | None = Field(default=None, description="the latest clinician's review")
    review_state: ReviewState = ReviewState.unreviewed
    next_step: NextStep | None = Field(
        default=None,
        description="the suggested next step for the clinician's level once signed off, else the "
        "model's; None for a rejected image",
    )


class ReportPage(BaseModel):
    """One page of a cursor-paginated list, newest first."""

    items: list[JobView]
    next_cursor: str | None = None


JobView.model_rebuild()
