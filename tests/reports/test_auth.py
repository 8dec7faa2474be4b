"""Internal-token protection and API-key verification."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from services.reports.db.models import Tenant
from services.reports.db.tenants import create_api_key, revoke_api_key

VERIFY = "/internal/v1/auth/verify"


def test_valid_api_key_verifies_to_its_tenant_and_key(client: TestClient, db: Session, tenant: str) -> None:
    key, raw_key = create_api_key(db, db.get_one(Tenant, tenant))
    response = client.post(VERIFY, json={"api_key": raw_key})
    assert response.status_code == 200
    assert response.json() == {"tenant_id": tenant, "key_id": key.id}


def test_revoked_api_key_is_invalid_api_key(client: TestClient, db: Session, tenant: str) -> None:
    key, raw_key = create_api_key(db, db.get_one(Tenant, tenant))
    revoke_api_key(db, key.id)
    response = client.post(VERIFY, json={"api_key": raw_key})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.invalid_api_key"


def test_unknown_api_key_is_invalid_api_key(client: TestClient, tenant: str) -> None:
    response = client.post(VERIFY, json={"api_key": "sk_" + "x" * 43})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.invalid_api_key"


@pytest.mark.parametrize("headers", [{"X-Internal-Token": ""}, {"X-Internal-Token": "wrong-token"}])
def test_wrong_internal_token_is_401(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post(VERIFY, json={"api_key": "sk_x"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.internal_token_invalid"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", VERIFY),
        ("GET", "/internal/v1/jobs/any"),
        ("GET", "/internal/v1/reports"),
        ("PUT", "/internal/v1/reports/any"),
        ("POST", "/internal/v1/batches"),
    ],
)
def test_missing_internal_token_is_401_on_every_internal_route(
    client: TestClient, method: str, path: str
) -> None:
    del client.headers["X-Internal-Token"]
    response = client.request(method, path, json={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.internal_token_invalid"
