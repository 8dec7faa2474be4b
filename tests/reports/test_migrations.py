"""Alembic: `upgrade head` builds the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.reports.db.engine import make_engine
from services.reports.db.models import Base
from tests.reports.migrate import ALEMBIC_INI, REPO_ROOT, upgrade_head

EXPECTED_TABLES = {
    "tenants",
    "api_keys",
    "batches",
    "jobs",
    "reports",
    "webhook_endpoints",
    "fhir_endpoints",
    "deliveries",
    "users",
    "reviews",
    "lesions",
    "audit_events",
    "alembic_version",
}


def _assert_schema_matches_models(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == EXPECTED_TABLES
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            assert diff == []
            unique = inspect(connection).get_unique_constraints("jobs")
            assert {"tenant_id", "idempotency_key"} in [set(c["column_names"]) for c in unique]
    finally:
        engine.dispose()


def test_upgrade_head_builds_the_model_schema_on_a_fresh_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'not-yet' / 'created' / 'reports.db'}"
    upgrade_head(url)
    _assert_schema_matches_models(url)


@pytest.mark.postgres
def test_upgrade_head_builds_the_model_schema_on_a_fresh_postgres_schema(fresh_postgres_url: str) -> None:
    upgrade_head(fresh_postgres_url)
    _assert_schema_matches_models(fresh_postgres_url)


def test_alembic_command_from_repo_root_reads_reports_database_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'skintriage.db'}"
    env = {**os.environ, "REPORTS_DATABASE_URL": url}
    alembic = Path(sys.executable).with_name("alembic")
    result = subprocess.run(
        [str(alembic), "-c", str(ALEMBIC_INI.relative_to(REPO_ROOT)), "upgrade", "head"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    _assert_schema_matches_models(url)
