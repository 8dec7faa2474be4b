"""Batches: registration, progress counts, tenant isolation."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.reports.factories import job_body, report_body, tenant_headers

BATCHES = "/internal/v1/batches"


def _create_batch(client: TestClient, tenant: str, batch_id: str = "batch_1", total: int = 3) -> None:
    body = {"batch_id": batch_id, "client_ref": "clinic-7", "total": total}
    assert client.post(BATCHES, json=body, headers=tenant_headers(tenant)).status_code == 201


def test_batch_shows_its_jobs_and_progress_counts(client: TestClient, tenant: str) -> None:
    _create_batch(client, tenant)
    for job_id in ("job_1", "job_2", "job_3"):
        body = job_body(tenant, job_id=job_id, batch_id="batch_1")
        assert client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant)).status_code == 201
    client.put(
        "/internal/v1/reports/job_1", json=report_body(tenant, "job_1"), headers=tenant_headers(tenant)
    )
    client.post("/internal/v1/jobs/job_2/running", headers=tenant_headers(tenant))
    batch = client.get(f"{BATCHES}/batch_1", headers=tenant_headers(tenant)).json()
    assert batch["batch_id"] == "batch_1"
    assert batch["client_ref"] == "clinic-7"
    assert batch["counts"] == {"total": 3, "queued": 1, "running": 1, "done": 1, "rejected": 0, "failed": 0}
    assert [item["job_id"] for item in batch["items"]] == ["job_1", "job_2", "job_3"]
    assert batch["items"][0]["result"]["triage_level"] == "urgent"


def test_repeated_batch_registration_returns_the_existing_batch(client: TestClient, tenant: str) -> None:
    _create_batch(client, tenant, total=3)
    again = client.post(BATCHES, json={"batch_id": "batch_1", "total": 5}, headers=tenant_headers(tenant))
    assert again.status_code == 200
    assert again.json()["counts"]["total"] == 3


def test_another_tenants_batch_is_batch_not_found(client: TestClient, tenant: str, other_tenant: str) -> None:
    _create_batch(client, tenant)
    response = client.get(f"{BATCHES}/batch_1", headers=tenant_headers(other_tenant))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "batch.not_found"


def test_job_in_another_tenants_batch_is_batch_not_found(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    _create_batch(client, tenant)
    body = job_body(other_tenant, batch_id="batch_1")
    response = client.post("/internal/v1/jobs", json=body, headers=tenant_headers(other_tenant))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "batch.not_found"


def test_batch_id_taken_by_another_tenant_is_batch_conflict(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    _create_batch(client, tenant)
    response = client.post(
        BATCHES, json={"batch_id": "batch_1", "total": 1}, headers=tenant_headers(other_tenant)
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "batch.conflict"
