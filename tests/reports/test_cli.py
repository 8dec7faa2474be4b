"""The operator CLI: create, list and revoke API keys against REPORTS_DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.reports.cli import EXIT_NOT_FOUND, EXIT_NOT_MIGRATED, main
from services.reports.db.models import ApiKey, Tenant
from services.reports.domain.api_keys import hash_api_key
from tests.reports.migrate import REPO_ROOT


def _create_key(database_url: str, tenant: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["--database-url", database_url, "create-key", "--tenant", tenant]) == 0
    return capsys.readouterr().out.strip()


def test_create_key_prints_the_key_once_and_stores_only_its_sha256(
    database_url: str, db: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    raw_key = _create_key(database_url, "acme", capsys)
    assert raw_key.startswith("sk_")
    stored = db.scalars(select(ApiKey)).one()
    assert stored.key_sha256 == hash_api_key(raw_key)
    assert raw_key not in {stored.prefix, stored.key_sha256, stored.id}
    assert db.scalars(select(Tenant.name)).all() == ["acme"]


def test_create_then_revoke_round_trip_through_verify(
    database_url: str, db: Session, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    raw_key = _create_key(database_url, "acme", capsys)
    verified = client.post("/internal/v1/auth/verify", json={"api_key": raw_key})
    assert verified.status_code == 200
    key_id = verified.json()["key_id"]

    assert main(["--database-url", database_url, "revoke-key", key_id]) == 0
    refused = client.post("/internal/v1/auth/verify", json={"api_key": raw_key})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "auth.invalid_api_key"


def test_list_keys_shows_prefixes_never_keys(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    acme_key = _create_key(database_url, "acme", capsys)
    _create_key(database_url, "globex", capsys)
    assert main(["--database-url", database_url, "list-keys", "--tenant", "acme"]) == 0
    listing = capsys.readouterr().out
    assert acme_key not in listing
    assert acme_key[:10] in listing
    assert "globex" not in listing


def test_create_tenant_is_idempotent(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--database-url", database_url, "create-tenant", "acme"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["--database-url", database_url, "create-tenant", "acme"]) == 0
    assert capsys.readouterr().out.strip() == first


def test_revoking_an_unknown_key_exits_non_zero(database_url: str) -> None:
    assert main(["--database-url", database_url, "revoke-key", "key_missing"]) == EXIT_NOT_FOUND


def test_cli_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    assert main(["--database-url", f"sqlite:///{tmp_path / 'empty.db'}", "list-keys"]) == EXIT_NOT_MIGRATED


def test_cli_runs_as_a_module_with_reports_database_url(database_url: str) -> None:
    env = {**os.environ, "REPORTS_DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "services.reports.cli", "create-key", "--tenant", "acme"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("sk_")
