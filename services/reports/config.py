"""Settings for the reports service, read from `REPORTS_*` environment variables."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.reports import MAX_LEASE_SECONDS
from contracts.reviews import (
    DEFAULT_NEXT_STEP_MONITOR,
    DEFAULT_NEXT_STEP_ROUTINE,
    DEFAULT_NEXT_STEP_URGENT,
    MAX_NEXT_STEP_LENGTH,
    NextStepsUpdate,
)
from contracts.secrets import InternalToken

DEFAULT_DATABASE_URL = "sqlite:///var/skintriage.db"
DATABASE_URL_ENV = "REPORTS_DATABASE_URL"


class Settings(BaseSettings):
    """Validated at start-up: a missing or placeholder internal token stops the process."""

    model_config = SettingsConfigDict(env_prefix="REPORTS_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite:///path (embedded) or postgresql+psycopg://... (production)",
    )
    internal_token: InternalToken = Field(description="shared secret expected in X-Internal-Token")

    # The sweeper (services/reports/sweeper.py): the jobs table is the truth, and the queue is
    # brought back to it. Without a broker URL it does not run.
    broker_url: str | None = Field(
        default=None, description="the inference queue's broker (as INFERENCE_BROKER_URL); unset = no sweeper"
    )
    sweep_interval_seconds: float = Field(default=10.0, ge=0, description="0 = no sweeper")
    sweep_queued_grace_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a job queued this long, with the queue empty, has lost its task: it is re-published",
    )
    sweep_max_redrives: int = Field(
        default=3, ge=0, description="re-publications of one job before it is failed `job.abandoned`"
    )
    sweep_batch_size: int = Field(default=200, gt=0, description="jobs taken back per sweep")
    default_lease_seconds: int = Field(
        default=120,
        ge=1,
        le=MAX_LEASE_SECONDS,
        description="a running job's lease when the worker names none",
    )

    # Deliveries (issue 11): webhooks and FHIR pushes, sent by the dispatcher thread
    # (services/reports/dispatcher.py) from the deliveries table.
    delivery_interval_seconds: float = Field(
        default=2.0, ge=0, description="how often due deliveries are looked for (0 = no dispatcher)"
    )
    delivery_retry_window_seconds: float = Field(
        default=86_400.0, gt=0, description="how long a delivery is retried before it is failed"
    )
    delivery_retry_base_seconds: float = Field(
        default=5.0, gt=0, description="the first retry's delay; it doubles per attempt"
    )
    delivery_retry_max_delay_seconds: float = Field(default=3600.0, gt=0, description="the longest delay")
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, description="one attempt's HTTP timeout")
    delivery_concurrency: int = Field(default=4, ge=1, le=64, description="deliveries sent at once")
    delivery_batch_size: int = Field(default=32, ge=1, description="deliveries claimed per round")
    delivery_ca_bundle: str | None = Field(
        default=None,
        description="a PEM file of CAs receivers' certificates are checked against (default: the system's)",
    )
    webhook_secret_overlap_hours: float = Field(
        default=24.0, ge=0, description="how long a rotated-out webhook secret still signs"
    )
    fhir_identifier_system: str = Field(
        default="urn:skintriage:job", description="the identifier system of the FHIR resources made per job"
    )
    fhir_patient_identifier_system: str = Field(
        default="urn:skintriage:patient-ref",
        description="the system of the logical patient reference (the job's patient_ref)",
    )

    # Issue 12 (reviews): the suggested next step per triage level where a tenant set none of its own.
    next_step_urgent: str = Field(
        default=DEFAULT_NEXT_STEP_URGENT, min_length=1, max_length=MAX_NEXT_STEP_LENGTH
    )
    next_step_routine: str = Field(
        default=DEFAULT_NEXT_STEP_ROUTINE, min_length=1, max_length=MAX_NEXT_STEP_LENGTH
    )
    next_step_monitor: str = Field(
        default=DEFAULT_NEXT_STEP_MONITOR, min_length=1, max_length=MAX_NEXT_STEP_LENGTH
    )
    fhir_practitioner_identifier_system: str = Field(
        default="urn:skintriage:user",
        description="the identifier system of the Practitioner a signed-off report names (a user id)",
    )

    # Issue 12 (people): how long the audit trail is kept; the sweeper thread purges older entries
    # in chunks. Six years by default: the medical-records retention many jurisdictions ask for.
    audit_retention_days: int = Field(
        default=2190, ge=0, description="audit entries older than this are deleted (0 = kept forever)"
    )
    audit_purge_chunk_size: int = Field(
        default=1000, gt=0, description="audit entries deleted per transaction by the purge"
    )

    # Issue 12 (lesions): the change calibration (contracts.lesions.ChangeCalibration) that turns a
    # comparison's measures into flags; by default the shipped bundle's, found from the repository
    # root (in the image /app, where the Dockerfile copies models/).
    change_calibration: str = Field(
        default=os.path.join(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            "models",
            "skintriage-effnet-lite0",
            "2.0.1",
            "change_calibration.json",
        ),
        description="path of change_calibration.json (`make calibrate-change`); a missing or invalid "
        "file leaves comparisons without flags, with a note saying so",
    )

    @property
    def next_step_defaults(self) -> NextStepsUpdate:
        """The service's next steps, for tenants without their own."""
        return NextStepsUpdate(
            urgent=self.next_step_urgent, routine=self.next_step_routine, monitor=self.next_step_monitor
        )

    @property
    def delivery_window(self) -> timedelta:
        """How long a new (or replayed) delivery is tried."""
        return timedelta(seconds=self.delivery_retry_window_seconds)

    @field_validator("database_url")
    @classmethod
    def _url_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("REPORTS_DATABASE_URL must not be empty")
        return value.strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (a FastAPI dependency; tests override it)."""
    return Settings()  # type: ignore[call-arg]  # internal_token comes from the environment


def database_url_from_env() -> str:
    """The database URL alone, for migrations and the CLI, which need no internal token."""
    return os.environ.get(DATABASE_URL_ENV, "").strip() or DEFAULT_DATABASE_URL
