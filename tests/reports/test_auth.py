"""Internal-token protection and API-key verification."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from contracts.users import Role
from services.reports.db.models import Tenant
from services.reports.db.tenants import create_api_key, get_or_create_user, revoke_api_key
from services.reports.db.types import utc_now

VERIFY = "/internal/v1/auth/verify"


def test_a_key_verifies_to_its_tenant_key_and_user(client: TestClient, db: Session, tenant: str) -> None:
    key, raw_key = create_api_key(db, db.get_one(Tenant, tenant))
    response = client.post(VERIFY, json={"api_key": raw_key})
    assert response.status_code == 200
    # A key made without naming a user acts as the tenant's `admin` user.
    assert response.json() == {
        "tenant_id": tenant,
        "key_id": key.id,
        "user_id": key.user_id,
        "user_name": "admin",
        "role": "admin",
    }


def test_a_named_clinicians_key_verifies_to_them(client: TestClient, db: Session, tenant: str) -> None:
    owner = db.get_one(Tenant, tenant)
    user, created = get_or_create_user(db, owner, "Dr Ada", Role.clinician)
    assert created
    _key, raw_key = create_api_key(db, owner, user=user)
    body = client.post(VERIFY, json={"api_key": raw_key}).json()
    assert (body["user_id"], body["user_name"], body["role"]) == (user.id, "Dr Ada", "clinician")


def test_a_disabled_users_keys_are_invalid(client: TestClient, db: Session, tenant: str) -> None:
    owner = db.get_one(Tenant, tenant)
    user, _ = get_or_create_user(db, owner, "leaver", Role.integrator)
    _, raw_key = create_api_key(db, owner, user=user)
    assert client.post(VERIFY, json={"api_key": raw_key}).status_code == 200
    user.disabled_at = utc_now()
    db.commit()
    response = client.post(VERIFY, json={"api_key": raw_key})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.invalid_api_key"


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
