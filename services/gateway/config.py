"""Gateway settings: environment variables prefixed `GATEWAY_`, validated once at start-up."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.jobs import MAX_CHUNK_JOBS
from contracts.secrets import InternalToken

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the gateway. Adapters get plain values from here, never the environment."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    reports_url: str = "http://127.0.0.1:8002"
    broker_url: str = "sqla+sqlite:///var/celery-broker.db"
    internal_token: InternalToken = Field(description="shared token sent to reports as X-Internal-Token")
    reports_timeout_seconds: float = Field(default=10.0, gt=0)

    max_upload_bytes: int = Field(default=10 * MIB, gt=0, description="one image file, bytes")
    max_pixels: int = Field(default=40_000_000, gt=0, description="declared width x height")
    min_side: int = Field(default=32, gt=0, description="shorter side, px")
    reencode_max_side: int = Field(default=1024, gt=0, description="longer side after downscale, px")
    jpeg_quality: int = Field(default=92, ge=50, le=100)

    max_batch_items: int = Field(default=100, gt=0)
    max_batch_upload_bytes: int = Field(default=256 * MIB, gt=0, description="whole batch body")
    max_archive_entries: int = Field(
        default=1000, gt=0, description="zip entries of any kind, directories and junk included"
    )
    max_archive_uncompressed_bytes: int = Field(default=512 * MIB, gt=0)

    max_concurrent_decodes: int = Field(
        default=4, gt=0, description="images decoded at once; bounds memory (a 40 MP PNG is ~120 MB)"
    )
    max_wait_seconds: int = Field(default=30, ge=0, description="cap for `Prefer: wait=N`")
    wait_poll_ms: float = Field(
        default=50,
        gt=0,
        le=5000,
        description="on a broker without notifications, how often the statuses of every waited job "
        "are asked of reports (one call per tenant for all of them)",
    )
    # 1 s: a revoked or expired key stops working within a second on every replica (issue 10),
    # at the cost of at most one verification call per key per second per process.
    auth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    auth_cache_max_entries: int = Field(default=10_000, gt=0)
    register_concurrency: int = Field(default=8, gt=0, description="parallel job registrations")
    task_chunk_size: int = Field(
        default=8,
        ge=1,
        le=MAX_CHUNK_JOBS,
        description="a batch's jobs per queued message (a worker micro-batch), and the most "
        "concurrent single submissions registered and queued together; 1 = a message per job",
    )
    group_linger_ms: float = Field(
        default=20,
        ge=0,
        le=1000,
        description="while the broker holds waiting messages (read with the queue bound, so only "
        "when max_queue_depth > 0), how long concurrent single submissions wait for each other to "
        "be queued as one micro-batch; 0 = never wait",
    )

    # Overload: refuse new work up front (503 `queue.full`, 429 `rate.limited`), never drop accepted work.
    max_queue_depth: int = Field(
        default=5000, ge=0, description="queued inference messages before 503 queue.full; 0 = unbounded"
    )
    queue_full_retry_after_seconds: int = Field(default=5, gt=0)
    queue_depth_cache_seconds: float = Field(
        default=0.1, ge=0, description="how long one read of the broker's queue depth is reused"
    )
    tenant_rate_per_second: float = Field(
        default=100.0, ge=0, description="images per second per tenant and gateway process; 0 = unlimited"
    )
    tenant_burst: int = Field(default=500, gt=0, description="images a tenant may send at once")

    # DICOM ingest (POST /v1/dicom, STOW-RS POST /dicomweb/studies).
    max_dicom_bytes: int = Field(
        default=64 * MIB, gt=0, description="one DICOM instance (uncompressed dermoscopy runs to tens of MB)"
    )
    max_stow_bytes: int = Field(default=256 * MIB, gt=0, description="a whole STOW-RS request")
    patient_ref_key: SecretStr | None = Field(
        default=None,
        description="HMAC key that turns a DICOM PatientID into the tenant's opaque patient_ref; unset: "
        "derived from the internal token (set it, so that rotating the token keeps patient refs stable)",
    )

    @field_validator("reports_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()  # type: ignore[call-arg]  # required fields come from the environment
