"""Jobs and batches: what the gateway submits and what the inference worker receives."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.text import PlainText


class JobStatus(StrEnum):
    """Lifecycle: queued -> running -> done | rejected (OOD/quality) | failed (gave up)."""

    queued = "queued"
    running = "running"
    done = "done"
    rejected = "rejected"
    failed = "failed"


# The end states: a waiting client is answered, and a worker never runs the job again (unless
# reports re-queues it first).
FINISHED_STATUSES = frozenset({JobStatus.done, JobStatus.rejected, JobStatus.failed})


Sex = Literal["male", "female", "other", "unknown"]
ClinicalField = Literal["age", "sex", "body_site"]
"""The names of `ClinicalMetadata`'s fields, as `contracts.reports.Prediction.metadata_used` lists them."""


class ClinicalMetadata(BaseModel):
    """What the worker may feed a model besides the image: age, sex and body site only. It travels
    in the task message, so it never carries identifiers (`patient_ref`, `client_ref`): the broker
    holds nothing the model does not use."""

    age: int | None = Field(default=None, ge=0, le=130)
    sex: Sex | None = None
    body_site: PlainText | None = Field(default=None, max_length=64)


class ImageMetadata(BaseModel):
    """Optional clinical context sent with an image. `patient_ref` is opaque to SkinTriage."""

    model_config = ConfigDict(extra="forbid")

    patient_ref: PlainText | None = Field(default=None, max_length=128)
    body_site: PlainText | None = Field(default=None, max_length=64)
    age: int | None = Field(default=None, ge=0, le=130)
    sex: Sex | None = None
    client_ref: PlainText | None = Field(default=None, max_length=128)
    # Issue 12: the lesion (contracts.lesions) this image shows; reports checks it is the tenant's
    # and the patient's. An identifier, so it never reaches the task message (`clinical()`).
    lesion_id: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]{1,64}$")

    def clinical(self) -> ClinicalMetadata | None:
        """The part a model may fuse (age, sex, body site); None when none of them was given."""
        if self.age is None and self.sex is None and self.body_site is None:
            return None
        return ClinicalMetadata(age=self.age, sex=self.sex, body_site=self.body_site)


class StoredImage(BaseModel):
    """An accepted upload after orientation fix, metadata stripping and compact re-encoding."""

    media_type: Literal["image/png", "image/jpeg"]
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    sha256: str
    data_b64: str = Field(description="base64 of the re-encoded bytes")


# Failures that mean "never queued": the job's task never reached the broker, so an
# Idempotency-Key retry of the same request queues it after all (and nothing else does).
# - queue.unavailable: the broker refused the gateway's publish;
# - registration.timeout: reports committed the registration only after the gateway had given up
#   waiting (and answered its client an error), so the gateway never queued it.
UNQUEUED_ERROR_CODES = frozenset({"queue.unavailable", "registration.timeout"})


# A DICOM UID: digits and dots, at most 64 characters (PS3.5 §9.1).
DICOM_UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
Laterality = Literal["left", "right", "bilateral", "unpaired"]


class DicomRef(BaseModel):
    """Where an image that arrived as a DICOM instance came from: its UIDs (the FHIR output
    refers to its ImagingStudy and names the instance), laterality and acquisition time. Nothing
    else from the DICOM header is kept; the patient's ID becomes an opaque `patient_ref`."""

    model_config = ConfigDict(extra="forbid")

    study_instance_uid: str = Field(max_length=64, pattern=DICOM_UID_PATTERN)
    series_instance_uid: str | None = Field(default=None, max_length=64, pattern=DICOM_UID_PATTERN)
    sop_instance_uid: str = Field(max_length=64, pattern=DICOM_UID_PATTERN)
    sop_class_uid: str = Field(max_length=64, pattern=DICOM_UID_PATTERN)
    laterality: Laterality | None = None
    acquired_at: datetime | None = None


class JobCreate(BaseModel):
    """Gateway -> reports: register a job before it is queued."""

    job_id: str
    tenant_id: str
    batch_id: str | None = None
    idempotency_key: str | None = None
    metadata: ImageMetadata = Field(default_factory=ImageMetadata)
    image: StoredImage
    filename: str | None = None
    dicom: DicomRef | None = Field(default=None, description="set when the image arrived as DICOM")
    register_within_ms: int | None = Field(
        default=None,
        gt=0,
        description="how long the caller waits for the answer: a registration that takes longer "
        "(a hung database) is recorded failed `registration.timeout` instead of being left queued "
        "with no task, since the caller has told its client the upload failed",
    )


class InferenceTask(BaseModel):
    """Celery message body for `inference.predict`: ids plus the compact image, never objects."""

    job_id: str
    tenant_id: str
    request_id: str | None = None
    image: StoredImage
    submitted_at: datetime
    clinical: ClinicalMetadata | None = Field(
        default=None,
        description="the request's age, sex and body site for a bundle that fuses them; None (or "
        "absent, as in tasks queued before it existed) = the request gave none",
    )
    track_lesion: bool = Field(
        default=False,
        description="the job's image belongs to a tracked lesion: the worker also measures what "
        "comparing it with the lesion's other images needs (the embedding and the segmented lesion "
        "area); an image outside a lesion can never be compared, so it is spared that cost",
    )
    awaited: bool = Field(
        default=False,
        description="a request waits for this job (`Prefer: wait`): the worker's job-finished "
        "notification carries the stored job, even from a micro-batch, so the gateway answers "
        "without reading it again",
    )


# Jobs per `inference.predict_chunk` message: what one mark-running call, one OOD call and one
# reports write handle together in the worker.
MAX_CHUNK_JOBS = 64


class InferenceChunk(BaseModel):
    """Celery message body for `inference.predict_chunk`: several jobs of ONE tenant (a batch's),
    run by the worker as one micro-batch with an outcome per job."""

    tasks: list[InferenceTask] = Field(min_length=1, max_length=MAX_CHUNK_JOBS)

    @model_validator(mode="after")
    def _one_tenant(self) -> InferenceChunk:
        if len({task.tenant_id for task in self.tasks}) != 1:
            raise ValueError("every job of a chunk belongs to the same tenant")
        if len({task.job_id for task in self.tasks}) != len(self.tasks):
            raise ValueError("a job appears twice in the chunk")
        return self


class BatchCounts(BaseModel):
    """Progress of a batch."""

    total: int = 0
    queued: int = 0
    running: int = 0
    done: int = 0
    rejected: int = 0
    failed: int = 0
