"""Every write records the user (issue 12): a submitted job names who submitted it, and each
change to a tenant's integrations (webhooks, the FHIR endpoint, a replayed delivery) is in the
audit trail with the user who made it, written in the same transaction as the change."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.users import Role
from services.reports.db.models import AuditEvent, Delivery, User
from services.reports.db.types import utc_now
from tests.reports.actors import CLIENT_IP, acting, make_user
from tests.reports.factories import job_body, tenant_headers

FHIR_ENDPOINT = {
    "base_url": "https://ehr.example/fhir",
    "token_url": "https://ehr.example/token",
    "client_id": "skintriage",
    "scope": "system/DiagnosticReport.c",
}


def _entries(db: Session, tenant: str) -> list[AuditEvent]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant).order_by(AuditEvent.id)))


def _who(user: User) -> dict[str, str]:
    return {"user_id": user.id, "name": user.name}


def test_a_job_names_the_user_who_submitted_it(client: TestClient, db: Session, tenant: str) -> None:
    clinician = make_user(db, tenant, "Dr Submit", Role.clinician)
    created = client.post("/internal/v1/jobs", json=job_body(tenant), headers=acting(clinician))
    assert created.status_code == 201
    assert created.json()["submitted_by"] == _who(clinician)
    job_id = created.json()["job_id"]
    read = client.get(f"/internal/v1/jobs/{job_id}", headers=tenant_headers(tenant))
    assert read.json()["submitted_by"] == _who(clinician)


def test_a_replayed_submission_keeps_its_first_submitter(
    client: TestClient, db: Session, tenant: str
) -> None:
    first = make_user(db, tenant, "first", Role.integrator)
    second = make_user(db, tenant, "second", Role.clinician)
    body = job_body(tenant, idempotency_key="same-key")
    client.post("/internal/v1/jobs", json=body, headers=acting(first))
    again = client.post("/internal/v1/jobs", json={**body, "job_id": "job_other"}, headers=acting(second))
    assert again.status_code == 200
    assert again.json()["submitted_by"] == _who(first)


def test_every_job_of_a_bulk_registration_names_its_submitter(
    client: TestClient, db: Session, tenant: str
) -> None:
    integrator = make_user(db, tenant, "EHR bridge", Role.integrator)
    bodies = [job_body(tenant) for _ in range(3)]
    answer = client.post("/internal/v1/jobs/bulk", json={"jobs": bodies}, headers=acting(integrator))
    assert answer.status_code == 200
    assert [r["job"]["submitted_by"] for r in answer.json()["results"]] == [_who(integrator)] * 3


def test_a_job_registered_without_an_acting_user_names_nobody(client: TestClient, tenant: str) -> None:
    created = client.post("/internal/v1/jobs", json=job_body(tenant), headers=tenant_headers(tenant))
    assert created.status_code == 201
    assert created.json()["submitted_by"] is None


def test_webhook_changes_are_audited_with_their_user(client: TestClient, db: Session, tenant: str) -> None:
    admin = make_user(db, tenant, "Integrations admin", Role.admin)
    made = client.post(
        "/internal/v1/webhooks",
        json={"url": "https://receiver.example/hook", "events": ["job.finished"]},
        headers=acting(admin),
    )
    assert made.status_code == 201
    hook_id = made.json()["webhook_id"]
    assert (
        client.post(f"/internal/v1/webhooks/{hook_id}/rotate-secret", headers=acting(admin)).status_code
        == 200
    )
    assert client.delete(f"/internal/v1/webhooks/{hook_id}", headers=acting(admin)).status_code == 204
    entries = _entries(db, tenant)
    assert [(e.action, e.resource_type, e.resource_id) for e in entries] == [
        ("webhook.create", "webhook", hook_id),
        ("webhook.rotate_secret", "webhook", hook_id),
        ("webhook.remove", "webhook", hook_id),
    ]
    assert {(e.user_id, e.user_name, e.role, e.client_ip) for e in entries} == {
        (admin.id, "Integrations admin", "admin", CLIENT_IP)
    }
    # The secret itself is never written to the trail.
    assert all(e.details is None or "secret" not in str(e.details) for e in entries)


def test_fhir_endpoint_changes_are_audited_with_whether_the_key_changed(
    client: TestClient, db: Session, tenant: str
) -> None:
    integrator = make_user(db, tenant, "EHR integrator", Role.integrator)
    assert (
        client.put("/internal/v1/fhir-endpoint", json=FHIR_ENDPOINT, headers=acting(integrator)).status_code
        == 201
    )
    same_key = {**FHIR_ENDPOINT, "scope": "system/DiagnosticReport.c system/Observation.c"}
    assert (
        client.put("/internal/v1/fhir-endpoint", json=same_key, headers=acting(integrator)).status_code == 200
    )
    assert client.delete("/internal/v1/fhir-endpoint", headers=acting(integrator)).status_code == 204
    entries = _entries(db, tenant)
    assert [(e.action, e.user_id) for e in entries] == [
        ("fhir_endpoint.update", integrator.id),
        ("fhir_endpoint.update", integrator.id),
        ("fhir_endpoint.remove", integrator.id),
    ]
    assert [(e.details or {}).get("new_key") for e in entries[:2]] == [True, False]


def test_a_refused_change_leaves_no_entry(client: TestClient, db: Session, tenant: str) -> None:
    admin = make_user(db, tenant, "admin two", Role.admin)
    missing = client.delete("/internal/v1/webhooks/wh_missing", headers=acting(admin))
    assert missing.status_code == 404
    assert client.delete("/internal/v1/fhir-endpoint", headers=acting(admin)).status_code == 404
    assert _entries(db, tenant) == []


def test_a_replayed_delivery_is_audited(client: TestClient, db: Session, tenant: str) -> None:
    admin = make_user(db, tenant, "replayer", Role.admin)
    now = utc_now()
    delivery = Delivery(
        id="dlv_replay",
        tenant_id=tenant,
        kind="fhir",
        event="job.finished",
        dedupe_key="fhir:replay-test",
        status="failed",
        attempts=3,
        created_at=now,
        give_up_at=now + timedelta(hours=1),
    )
    db.add(delivery)
    db.commit()
    answer = client.post("/internal/v1/deliveries/dlv_replay/replay", headers=acting(admin))
    assert answer.status_code == 200
    [entry] = _entries(db, tenant)
    assert (entry.action, entry.resource_type, entry.resource_id, entry.user_id) == (
        "delivery.replay",
        "delivery",
        "dlv_replay",
        admin.id,
    )
    assert entry.details == {"kind": "fhir", "event": "job.finished"}
