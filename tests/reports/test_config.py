"""Settings fail fast on a missing or placeholder internal token."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from services.reports.config import DEFAULT_DATABASE_URL, Settings
from services.reports.db.engine import make_engine


def test_missing_internal_token_fails_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPORTS_INTERNAL_TOKEN", raising=False)
    with pytest.raises(ValidationError):
        Settings()  # type: ignore[call-arg]


@pytest.mark.parametrize("token", ["", "   ", "change-me", "CHANGEME", "change-me-in-production"])
def test_empty_or_placeholder_internal_token_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("REPORTS_INTERNAL_TOKEN", token)
    with pytest.raises(ValidationError):
        Settings()  # type: ignore[call-arg]


def test_settings_read_reports_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPORTS_INTERNAL_TOKEN", "a-real-secret-value")
    monkeypatch.delenv("REPORTS_DATABASE_URL", raising=False)
    settings = Settings()  # type: ignore[call-arg]
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite:///var/skintriage.db"
    assert settings.internal_token.get_secret_value() == "a-real-secret-value"


def test_sqlite_engine_creates_the_database_parent_folder(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'reports.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
    assert (tmp_path / "a" / "b" / "reports.db").is_file()
