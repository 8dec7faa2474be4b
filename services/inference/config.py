"""Inference worker settings (env prefix `INFERENCE_`), validated when the worker starts."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.secrets import InternalToken

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE_DIR = REPO_ROOT / "models" / "skintriage-effnet-lite0" / "2.0.1"
EMBEDDED_BROKER_URL = "sqla+sqlite:///var/celery-broker.db"
LEASE_MARGIN_SECONDS = 10
# Calls one attempt makes to ood and reports: mark running, score, store the report(s).
CALLS_PER_ATTEMPT = 3


class Settings(BaseSettings):
    """Everything the worker reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="INFERENCE_", frozen=True, extra="ignore")

    broker_url: str = EMBEDDED_BROKER_URL
    bundle_dir: Path = DEFAULT_BUNDLE_DIR
    ood_url: str = "http://127.0.0.1:8001"
    reports_url: str = "http://127.0.0.1:8002"
    internal_token: InternalToken
    ort_threads: int = Field(default=1, ge=1, le=64, description="ONNX Runtime intra-op threads per process")
    http_timeout_seconds: float = Field(
        default=4.0, gt=0, description="one call to ood or reports; a hung one is then retried"
    )
    # Transient failures (OOD, reports or their database down) are retried for a time, not a
    # count: 10 minutes outlasts a 5-minute outage with room for the last backoff.
    retry_window_seconds: int = Field(
        default=600, ge=0, description="s from the first attempt during which transient failures are retried"
    )
    retry_backoff_seconds: int = Field(default=1, ge=1, description="first retry delay; doubles each time")
    retry_backoff_max_seconds: int = Field(default=20, ge=1, description="cap of one retry delay")
    # A micro-batch takes well under a second (bench/README.md); the limits only catch a hang, and
    # with the longest retry delay they make the lease (50 s), which bounds how long a job a dead
    # worker held waits before the reports sweeper takes it back.
    task_soft_time_limit: int = Field(default=15, gt=0, description="s; the task gets to report failure")
    task_time_limit: int = Field(default=20, gt=0, description="s; the process running the task is killed")
    broker_visibility_timeout: int = Field(
        default=300,
        gt=0,
        description="s; Redis redelivers an unacked task after this (a retry's delay counts too)",
    )
    log_level: str = "INFO"

    @field_validator("ood_url", "reports_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @property
    def lease_seconds(self) -> int:
        """How long a job this worker marked running stays its own before the reports sweeper takes
        it back: one attempt (the hard time limit) plus the longest wait before the next attempt
        (which renews it), plus a margin for the calls in between."""
        return self.task_time_limit + self.retry_backoff_max_seconds + LEASE_MARGIN_SECONDS

    @model_validator(mode="after")
    def _limits_ordered(self) -> Settings:
        # A task still running when the visibility timeout expires is delivered to a second
        # worker as well (acks_late), so both time limits must end it before that; a retry waits
        # its delay as an unacked message, so the longest delay must end before it too.
        if not self.task_soft_time_limit < self.task_time_limit < self.broker_visibility_timeout:
            raise ValueError(
                "need task_soft_time_limit < task_time_limit < broker_visibility_timeout, got "
                f"{self.task_soft_time_limit}, {self.task_time_limit}, {self.broker_visibility_timeout}"
            )
        # A hung dependency must time out as a (retried) transient failure, not run the task into
        # its soft limit (a final failure): an attempt makes at most CALLS_PER_ATTEMPT calls.
        if not CALLS_PER_ATTEMPT * self.http_timeout_seconds < self.task_soft_time_limit:
            raise ValueError(
                f"need {CALLS_PER_ATTEMPT} x http_timeout_seconds < task_soft_time_limit, got "
                f"{self.http_timeout_seconds}, {self.task_soft_time_limit}"
            )
        if not self.retry_backoff_max_seconds + self.task_time_limit < self.broker_visibility_timeout:
            raise ValueError(
                "need retry_backoff_max_seconds + task_time_limit < broker_visibility_timeout, got "
                f"{self.retry_backoff_max_seconds} + {self.task_time_limit}, {self.broker_visibility_timeout}"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()  # type: ignore[call-arg]  # fields come from the environment
