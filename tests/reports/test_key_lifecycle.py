"""API key lifecycle (issue 10): optional expiry, `last_used_at` (written at most once a minute
per key), and the CLI that sets and shows both (both backends)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.reports.cli import EXIT_USAGE, main
from services.reports.db.models import ApiKey, Tenant
from services.reports.db.tenants import LAST_USED_RESOLUTION, create_api_key
from services.reports.db.types import utc_now

VERIFY = "/internal/v1/auth/verify"


def _stored(db: Session, key_id: str) -> ApiKey:
    db.expire_all()
    return db.get_one(ApiKey, key_id)


def test_an_expired_key_is_invalid_and_an_unexpired_one_works(
    client: TestClient, db: Session, tenant: str
) -> None:
    live, live_raw = create_api_key(db, db.get_one(Tenant, tenant), timedelta(days=1))
    expired, expired_raw = create_api_key(db, db.get_one(Tenant, tenant), timedelta(days=1))
    expired.expires_at = utc_now() - timedelta(seconds=1)
    db.commit()

    assert client.post(VERIFY, json={"api_key": live_raw}).status_code == 200
    refused = client.post(VERIFY, json={"api_key": expired_raw})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "auth.invalid_api_key"
    assert _stored(db, live.id).expires_at is not None


def test_last_used_at_is_recorded_at_most_once_per_resolution(
    client: TestClient, db: Session, tenant: str
) -> None:
    key, raw = create_api_key(db, db.get_one(Tenant, tenant))
    assert key.last_used_at is None

    client.post(VERIFY, json={"api_key": raw})
    first = _stored(db, key.id).last_used_at
    client.post(VERIFY, json={"api_key": raw})
    assert first is not None and _stored(db, key.id).last_used_at == first  # within the minute: no write

    stale = _stored(db, key.id)
    stale.last_used_at = first - LAST_USED_RESOLUTION
    db.commit()
    client.post(VERIFY, json={"api_key": raw})
    assert _stored(db, key.id).last_used_at > first - LAST_USED_RESOLUTION  # type: ignore[operator]


def test_the_cli_creates_expiring_keys_and_lists_expiry_and_last_use(
    database_url: str, db: Session, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["--database-url", database_url, "create-key", "--tenant", "acme", "--expires-in-days", "7"])
        == 0
    )
    raw = capsys.readouterr().out.strip()
    key = db.scalars(select(ApiKey)).one()
    assert key.expires_at is not None
    assert timedelta(days=6.99) < key.expires_at - key.created_at < timedelta(days=7.01)
    client.post(VERIFY, json={"api_key": raw})

    assert main(["--database-url", database_url, "list-keys"]) == 0
    # Only the table (the service's JSON log lines share stdout in this test).
    header, row = [line for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert header.split("\t")[5:7] == ["expires_at", "last_used_at"]
    assert all(value != "-" for value in row.split("\t")[5:7])
    assert (
        main(["--database-url", database_url, "create-key", "--tenant", "acme", "--expires-in-days", "0"])
        == EXIT_USAGE
    )
