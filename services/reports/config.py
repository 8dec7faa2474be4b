"""Settings for the reports service, read from `REPORTS_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.reports import MAX_LEASE_SECONDS
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
