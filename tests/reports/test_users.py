"""Users and their API keys as a tenant's admins manage them (issue 12), on both backends: every
change is recorded in the audit trail with the acting admin, keys of a disabled user or revoked
keys stop verifying, and another tenant's users and keys are a 404."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.users import Role
from services.reports.db.models import ApiKey, AuditEvent
from services.reports.domain.api_keys import hash_api_key
from tests.reports.actors import acting, make_user
from tests.reports.factories import tenant_headers

USERS = "/internal/v1/users"
KEYS = "/internal/v1/api-keys"


def _entries(db: Session, action: str) -> list[AuditEvent]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def _create_user(client: TestClient, headers: dict[str, str], name: str, role: str) -> dict[str, Any]:
    response = client.post(USERS, json={"name": name, "role": role}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _create_key(client: TestClient, headers: dict[str, str], user_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"{USERS}/{user_id}/api-keys", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_an_admin_creates_a_user_and_the_entry_names_the_admin(
    client: TestClient, db: Session, tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    request_id = "req-create-1"
    created = _create_user(client, acting(admin, **{"X-Request-ID": request_id}), "Dr Chen", "clinician")
    assert created["name"] == "Dr Chen" and created["role"] == "clinician"
    assert created["disabled_at"] is None and created["user_id"].startswith("usr_")

    (entry,) = _entries(db, "user.create")
    assert (entry.tenant_id, entry.resource_type, entry.resource_id) == (tenant, "user", created["user_id"])
    assert (entry.user_id, entry.user_name, entry.role) == (admin.id, "Ada Admin", "admin")
    assert entry.details == {"name": "Dr Chen", "role": "clinician"}
    assert entry.request_id == request_id


def test_a_taken_name_is_409_user_exists(client: TestClient, db: Session, tenant: str) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    _create_user(client, acting(admin), "Dr Chen", "clinician")
    again = client.post(USERS, json={"name": "Dr Chen", "role": "admin"}, headers=acting(admin))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "user.exists"
    assert len(_entries(db, "user.create")) == 1


def test_names_and_roles_are_checked(client: TestClient, db: Session, tenant: str) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    for body in ({"name": "", "role": "clinician"}, {"name": "x\ny", "role": "clinician"},
                 {"name": "   ", "role": "clinician"}, {"name": "Bo", "role": "owner"},
                 {"name": "x" * 129, "role": "admin"}):  # fmt: skip
        response = client.post(USERS, json=body, headers=acting(admin))
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "request.invalid"


def test_users_are_listed_oldest_first_and_only_the_tenants_own(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    make_user(db, other_tenant, "Globex Admin", Role.admin)
    first = _create_user(client, acting(admin), "Dr Chen", "clinician")
    second = _create_user(client, acting(admin), "EHR bridge", "integrator")
    listing = client.get(USERS, headers=tenant_headers(tenant)).json()["items"]
    assert [user["user_id"] for user in listing] == [admin.id, first["user_id"], second["user_id"]]


def test_a_new_key_is_shown_once_and_verifies_as_its_user_and_role(
    client: TestClient, db: Session, tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    clinician = _create_user(client, acting(admin), "Dr Chen", "clinician")
    created = _create_key(client, acting(admin), clinician["user_id"], expires_in_days=30)
    assert created["api_key"].startswith(created["prefix"]) and created["expires_at"] is not None
    stored = db.get(ApiKey, created["key_id"])
    assert stored is not None and stored.key_sha256 == hash_api_key(created["api_key"])

    verified = client.post("/internal/v1/auth/verify", json={"api_key": created["api_key"]}).json()
    assert (verified["user_id"], verified["user_name"], verified["role"]) == (
        clinician["user_id"],
        "Dr Chen",
        "clinician",
    )
    listing = client.get(KEYS, headers=tenant_headers(tenant))
    assert created["api_key"] not in listing.text
    (item,) = [key for key in listing.json()["items"] if key["key_id"] == created["key_id"]]
    assert (item["user_name"], item["role"], item["revoked_at"]) == ("Dr Chen", "clinician", None)
    (entry,) = _entries(db, "key.create")
    assert (entry.resource_type, entry.resource_id, entry.user_id) == ("api_key", created["key_id"], admin.id)
    assert entry.details is not None and entry.details["user_id"] == clinician["user_id"]


def test_a_disabled_users_keys_stop_verifying_and_they_get_no_new_one(
    client: TestClient, db: Session, tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    clinician = _create_user(client, acting(admin), "Dr Chen", "clinician")
    key = _create_key(client, acting(admin), clinician["user_id"])["api_key"]

    disabled = client.post(f"{USERS}/{clinician['user_id']}/disable", headers=acting(admin))
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    refused = client.post("/internal/v1/auth/verify", json={"api_key": key})
    assert refused.status_code == 401
    again = client.post(f"{USERS}/{clinician['user_id']}/disable", headers=acting(admin)).json()
    assert again["disabled_at"] == disabled.json()["disabled_at"]  # idempotent, first time kept
    assert len(_entries(db, "user.disable")) == 1
    no_key = client.post(f"{USERS}/{clinician['user_id']}/api-keys", json={}, headers=acting(admin))
    assert no_key.status_code == 409
    assert no_key.json()["error"]["code"] == "user.disabled"


def test_an_admin_cannot_disable_themselves(client: TestClient, db: Session, tenant: str) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    response = client.post(f"{USERS}/{admin.id}/disable", headers=acting(admin))
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "user.self"
    db.expire_all()
    assert admin.disabled_at is None


def test_a_revoked_key_stops_verifying_and_the_revocation_is_recorded(
    client: TestClient, db: Session, tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    clinician = _create_user(client, acting(admin), "Dr Chen", "clinician")
    created = _create_key(client, acting(admin), clinician["user_id"])
    assert client.delete(f"{KEYS}/{created['key_id']}", headers=acting(admin)).status_code == 204
    assert client.post("/internal/v1/auth/verify", json={"api_key": created["api_key"]}).status_code == 401
    assert client.delete(f"{KEYS}/{created['key_id']}", headers=acting(admin)).status_code == 204
    (entry,) = _entries(db, "key.revoke")
    assert (entry.resource_id, entry.user_id) == (created["key_id"], admin.id)


def test_an_admin_cannot_revoke_the_key_they_are_using(client: TestClient, db: Session, tenant: str) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    spare = _create_key(client, acting(admin), admin.id)
    in_use = _create_key(client, acting(admin), admin.id)
    refused = client.delete(f"{KEYS}/{in_use['key_id']}", headers=acting(admin, key_id=in_use["key_id"]))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "api_key.self"
    assert client.post("/internal/v1/auth/verify", json={"api_key": in_use["api_key"]}).status_code == 200
    # With another key, it goes.
    assert (
        client.delete(f"{KEYS}/{in_use['key_id']}", headers=acting(admin, key_id=spare["key_id"])).status_code
        == 204
    )


def test_another_tenants_users_and_keys_are_not_found(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    outsider = make_user(db, other_tenant, "Globex Admin", Role.admin)
    theirs = _create_user(client, acting(outsider), "Globex clinician", "clinician")
    their_key = _create_key(client, acting(outsider), theirs["user_id"])

    for response in (
        client.post(f"{USERS}/{theirs['user_id']}/disable", headers=acting(admin)),
        client.post(f"{USERS}/{theirs['user_id']}/api-keys", json={}, headers=acting(admin)),
        client.post(f"{USERS}/usr_does_not_exist/disable", headers=acting(admin)),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "user.not_found"
    revoke = client.delete(f"{KEYS}/{their_key['key_id']}", headers=acting(admin))
    assert revoke.status_code == 404
    assert revoke.json()["error"]["code"] == "api_key.not_found"
    assert client.post("/internal/v1/auth/verify", json={"api_key": their_key["api_key"]}).status_code == 200
    assert their_key["key_id"] not in client.get(KEYS, headers=tenant_headers(tenant)).text
