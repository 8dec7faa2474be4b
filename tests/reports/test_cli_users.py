"""The operator CLI's users (issue 12): create and disable users, keys for a named user, and the
audit entries every change writes (no acting user, details {"via": "cli"})."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.reports.cli import EXIT_CONFLICT, EXIT_NOT_FOUND, main
from services.reports.db.models import AuditEvent, User


def _run(database_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["--database-url", database_url, *args])
    return status, capsys.readouterr().out.strip()


def _audit(db: Session) -> list[tuple[str, str, str | None]]:
    db.expire_all()
    events = db.scalars(select(AuditEvent).order_by(AuditEvent.id))
    return [(event.action, event.resource_type, event.user_id) for event in events]


def test_a_key_for_a_named_user_verifies_as_that_user_and_every_change_is_audited(
    database_url: str, db: Session, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    status, user_id = _run(
        database_url, capsys, "create-user", "--tenant", "acme", "--name", "Dr Chen", "--role", "clinician"
    )
    assert status == 0 and user_id.startswith("usr_")
    status, key = _run(database_url, capsys, "create-key", "--tenant", "acme", "--user", "Dr Chen")
    assert status == 0
    verified = client.post("/internal/v1/auth/verify", json={"api_key": key}).json()
    assert (verified["user_id"], verified["role"]) == (user_id, "clinician")

    status, _ = _run(database_url, capsys, "revoke-key", verified["key_id"])
    assert status == 0
    assert _audit(db) == [
        ("user.create", "user", None),
        ("key.create", "api_key", None),
        ("key.revoke", "api_key", None),
    ]
    db.expire_all()
    assert {event.details["via"] for event in db.scalars(select(AuditEvent)) if event.details} == {"cli"}


def test_a_key_without_a_user_acts_as_the_tenants_admin_made_once(
    database_url: str, db: Session, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = [_run(database_url, capsys, "create-key", "--tenant", "acme")[1] for _ in range(2)]
    roles = {
        client.post("/internal/v1/auth/verify", json={"api_key": key}).json()["user_name"] for key in keys
    }
    assert roles == {"admin"}
    assert [action for action, _, _ in _audit(db)] == ["user.create", "key.create", "key.create"]


def test_a_disabled_users_keys_stop_working_and_they_get_no_new_one(
    database_url: str, db: Session, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(database_url, capsys, "create-user", "--tenant", "acme", "--name", "Dr Chen", "--role", "clinician")
    _, key = _run(database_url, capsys, "create-key", "--tenant", "acme", "--user", "Dr Chen")
    assert _run(database_url, capsys, "disable-user", "--tenant", "acme", "--name", "Dr Chen")[0] == 0
    assert client.post("/internal/v1/auth/verify", json={"api_key": key}).status_code == 401
    assert (
        _run(database_url, capsys, "create-key", "--tenant", "acme", "--user", "Dr Chen")[0] == EXIT_CONFLICT
    )
    assert [action for action, _, _ in _audit(db)] == ["user.create", "key.create", "user.disable"]
    status, listing = _run(database_url, capsys, "list-users", "--tenant", "acme")
    assert status == 0
    (row,) = [line.split("\t") for line in listing.splitlines()[1:]]
    assert row[1:3] == ["Dr Chen", "clinician"] and row[4] != "-"


def test_a_taken_name_and_unknown_users_are_refused(
    database_url: str, db: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("create-user", "--tenant", "acme", "--name", "Dr Chen", "--role", "clinician")
    assert _run(database_url, capsys, *args)[0] == 0
    assert _run(database_url, capsys, *args)[0] == EXIT_CONFLICT
    assert (
        _run(database_url, capsys, "create-key", "--tenant", "acme", "--user", "Nobody")[0] == EXIT_NOT_FOUND
    )
    assert (
        _run(database_url, capsys, "disable-user", "--tenant", "globex", "--name", "Dr Chen")[0]
        == EXIT_NOT_FOUND
    )
    assert len(db.scalars(select(User)).all()) == 1


def test_list_keys_names_each_keys_user_and_role_last(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(
        database_url,
        capsys,
        "create-user",
        "--tenant",
        "acme",
        "--name",
        "EHR bridge",
        "--role",
        "integrator",
    )
    _run(database_url, capsys, "create-key", "--tenant", "acme", "--user", "EHR bridge")
    _, listing = _run(database_url, capsys, "list-keys", "--tenant", "acme")
    header, row = (line.split("\t") for line in listing.splitlines())
    assert header[-2:] == ["user", "role"] and row[-2:] == ["EHR bridge", "integrator"]
