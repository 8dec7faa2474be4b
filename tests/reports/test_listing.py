"""The report list: tenant-scoped, newest first, filtered, keyset-paginated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from services.reports.db.models import Job
from tests.reports.factories import job_body, report_body, tenant_headers

LIST = "/internal/v1/reports"


def _create(client: TestClient, tenant: str, job_id: str, patient_ref: str = "patient-1") -> None:
    body = job_body(tenant, job_id=job_id, metadata={"patient_ref": patient_ref})
    assert client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant)).status_code == 201


def _finish(client: TestClient, tenant: str, job_id: str, **fields: Any) -> None:
    response = client.put(
        f"/internal/v1/reports/{job_id}",
        json=report_body(tenant, job_id, **fields),
        headers=tenant_headers(tenant),
    )
    assert response.status_code == 200


def _set_created_at(db: Session, created: dict[str, datetime]) -> None:
    for job_id, when in created.items():
        db.execute(update(Job).where(Job.id == job_id).values(created_at=when))
    db.commit()


def _ids(client: TestClient, tenant: str, **params: Any) -> list[str]:
    response = client.get(LIST, params=params, headers=tenant_headers(tenant))
    assert response.status_code == 200, response.text
    return [item["job_id"] for item in response.json()["items"]]


def test_list_is_newest_first_and_includes_queued_jobs(client: TestClient, db: Session, tenant: str) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(3):
        _create(client, tenant, f"job_{i}")
    _set_created_at(db, {f"job_{i}": base + timedelta(minutes=i) for i in range(3)})
    _finish(client, tenant, "job_1")
    response = client.get(LIST, headers=tenant_headers(tenant)).json()
    assert [item["job_id"] for item in response["items"]] == ["job_2", "job_1", "job_0"]
    assert [item["status"] for item in response["items"]] == ["queued", "done", "queued"]
    assert response["items"][1]["result"]["triage_level"] == "urgent"
    assert response["next_cursor"] is None


def test_cursor_pages_visit_every_job_once_in_order(client: TestClient, db: Session, tenant: str) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    job_ids = [f"job_{i}" for i in range(7)]
    for job_id in job_ids:
        _create(client, tenant, job_id)
    # Three share a timestamp: the id breaks the tie, so none is skipped or repeated.
    _set_created_at(db, {job_id: base + timedelta(seconds=min(i, 3)) for i, job_id in enumerate(job_ids)})
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get(LIST, params=params, headers=tenant_headers(tenant)).json()
        seen += [item["job_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["job_6", "job_5", "job_4", "job_3", "job_2", "job_1", "job_0"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"patient_ref": "patient-b"}, ["job_b"]),
        ({"triage_level": "urgent"}, ["job_a"]),
        ({"triage_level": "routine"}, ["job_b"]),
        ({"status": "queued"}, ["job_q"]),
        ({"status": "rejected"}, ["job_r"]),
        ({"ood_decision": "rejected_ood"}, ["job_r"]),
        ({"ood_decision": "accepted", "patient_ref": "patient-a"}, ["job_a"]),
    ],
)
def test_list_filters_narrow_the_results(
    client: TestClient, tenant: str, params: dict[str, str], expected: list[str]
) -> None:
    _create(client, tenant, "job_a", patient_ref="patient-a")
    _create(client, tenant, "job_b", patient_ref="patient-b")
    _create(client, tenant, "job_r", patient_ref="patient-a")
    _create(client, tenant, "job_q", patient_ref="patient-a")
    _finish(client, tenant, "job_a", triage_level="urgent")
    _finish(client, tenant, "job_b", triage_level="routine")
    _finish(client, tenant, "job_r", status="rejected", decision="rejected_ood")
    assert _ids(client, tenant, **params) == expected


def test_since_is_inclusive_and_until_exclusive(client: TestClient, db: Session, tenant: str) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(4):
        _create(client, tenant, f"job_{i}")
    _set_created_at(db, {f"job_{i}": base + timedelta(days=i) for i in range(4)})
    since, until = (base + timedelta(days=1)).isoformat(), (base + timedelta(days=3)).isoformat()
    assert _ids(client, tenant, since=since, until=until) == ["job_2", "job_1"]


def test_list_shows_only_the_callers_tenant(client: TestClient, tenant: str, other_tenant: str) -> None:
    _create(client, tenant, "job_mine")
    _create(client, other_tenant, "job_theirs")
    assert _ids(client, tenant) == ["job_mine"]
    assert _ids(client, other_tenant) == ["job_theirs"]


def test_tampered_cursor_is_cursor_invalid(client: TestClient, tenant: str) -> None:
    response = client.get(LIST, params={"cursor": "bm90LWEtY3Vyc29y"}, headers=tenant_headers(tenant))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "cursor.invalid"


def test_out_of_range_limit_is_request_invalid(client: TestClient, tenant: str) -> None:
    response = client.get(LIST, params={"limit": 0}, headers=tenant_headers(tenant))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request.invalid"


@pytest.mark.parametrize(
    "params",
    [
        {"patient_ref": "a\x00b"},
        {"patient_ref": "a\nb"},
        {"since": "1700000000"},
        {"until": "-5"},
        # Valid ISO 8601, but before year 1 or after year 9999 once in UTC (found by Schemathesis).
        {"since": "0001-01-01T00:00:00+01:00"},
        {"until": "9999-12-31T23:59:59-23:59"},
    ],
)
def test_control_characters_and_bare_numbers_are_request_invalid(
    client: TestClient, tenant: str, params: dict[str, str]
) -> None:
    response = client.get(LIST, params=params, headers=tenant_headers(tenant))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request.invalid"


def test_a_nul_in_a_registered_patient_ref_is_refused_not_stored(client: TestClient, tenant: str) -> None:
    body = job_body(tenant, metadata={"patient_ref": "p\x001"})
    response = client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant))
    assert response.status_code == 422 and response.json()["error"]["code"] == "request.invalid"
    assert _ids(client, tenant) == []
