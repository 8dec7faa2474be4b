"""Job registration (idempotent), reads, status changes and tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.reports.db import jobs as jobs_db
from services.reports.db.models import Job
from tests.reports.factories import PNG_BYTES, job_body, report_body, stored_image, tenant_headers

JOBS = "/internal/v1/jobs"


def _create(client: TestClient, tenant: str, **fields: Any) -> dict[str, Any]:
    response = client.post(JOBS, json=job_body(tenant, **fields), headers=tenant_headers(tenant))
    assert response.status_code == 201, response.text
    return dict(response.json())


def _job_count(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Job)) or 0


def test_new_job_is_created_queued_with_its_metadata(client: TestClient, tenant: str) -> None:
    job = _create(client, tenant, job_id="job_a")
    assert job["job_id"] == "job_a"
    assert job["status"] == "queued"
    assert job["metadata"]["patient_ref"] == "patient-1"
    assert job["result"] is None


def test_repeated_idempotency_key_returns_the_original_job_without_a_duplicate(
    client: TestClient, db: Session, tenant: str
) -> None:
    first = _create(client, tenant, job_id="job_first", idempotency_key="key-1")
    replay = client.post(
        JOBS,
        json=job_body(tenant, job_id="job_second", idempotency_key="key-1"),
        headers=tenant_headers(tenant),
    )
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replay"] == "true"
    assert replay.json()["job_id"] == first["job_id"] == "job_first"
    assert _job_count(db) == 1


def test_same_idempotency_key_in_another_tenant_is_a_new_job(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    _create(client, tenant, idempotency_key="shared")
    _create(client, other_tenant, idempotency_key="shared")
    assert _job_count(db) == 2


def test_repeated_job_id_returns_the_existing_job(client: TestClient, db: Session, tenant: str) -> None:
    _create(client, tenant, job_id="job_a")
    again = client.post(JOBS, json=job_body(tenant, job_id="job_a"), headers=tenant_headers(tenant))
    assert again.status_code == 200
    assert again.json()["job_id"] == "job_a"
    assert _job_count(db) == 1


def test_racing_idempotent_creates_store_one_job(
    client: TestClient, db: Session, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _create(client, tenant, job_id="job_winner", idempotency_key="race")
    # The loser's first lookup ran before the winner committed: it finds nothing, its insert
    # then hits UNIQUE(tenant_id, idempotency_key).
    real_existing = jobs_db._existing
    lookups: list[object] = []

    def stale_first_lookup(*args: Any) -> Job | None:
        lookups.append(args)
        return None if len(lookups) == 1 else real_existing(*args)

    monkeypatch.setattr(jobs_db, "_existing", stale_first_lookup)
    loser = client.post(
        JOBS,
        json=job_body(tenant, job_id="job_loser", idempotency_key="race"),
        headers=tenant_headers(tenant),
    )
    assert loser.status_code == 200
    assert loser.json()["job_id"] == "job_winner"
    assert len(lookups) == 2  # the insert really collided and was recovered from
    assert _job_count(db) == 1


def test_job_id_taken_by_another_tenant_is_job_conflict(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    _create(client, tenant, job_id="job_a")
    response = client.post(
        JOBS, json=job_body(other_tenant, job_id="job_a"), headers=tenant_headers(other_tenant)
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job.conflict"


def test_body_tenant_differing_from_header_is_tenant_mismatch(
    client: TestClient, tenant: str, other_tenant: str
) -> None:
    response = client.post(JOBS, json=job_body(other_tenant), headers=tenant_headers(tenant))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "request.tenant_mismatch"


def test_unknown_tenant_header_is_tenant_not_found(client: TestClient) -> None:
    response = client.get(f"{JOBS}/job_a", headers=tenant_headers("ten_nobody"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "tenant.not_found"


def test_image_not_matching_its_sha256_is_image_invalid(client: TestClient, tenant: str) -> None:
    image = {**stored_image(), "sha256": "0" * 64}
    response = client.post(JOBS, json=job_body(tenant, image=image), headers=tenant_headers(tenant))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "image.invalid"


def test_overlong_idempotency_key_is_request_invalid(client: TestClient, tenant: str) -> None:
    response = client.post(
        JOBS, json=job_body(tenant, idempotency_key="k" * 256), headers=tenant_headers(tenant)
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request.invalid"


def test_stored_image_is_served_with_its_media_type(client: TestClient, tenant: str) -> None:
    _create(client, tenant, job_id="job_a")
    response = client.get(f"{JOBS}/job_a/image", headers=tenant_headers(tenant))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == PNG_BYTES


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("GET", "/image", None),
        ("GET", "/heatmap.png", None),
        ("POST", "/running", None),
        ("POST", "/fail", "failure"),
    ],
)
def test_another_tenants_job_is_job_not_found(
    client: TestClient, tenant: str, other_tenant: str, method: str, suffix: str, body: str | None
) -> None:
    _create(client, tenant, job_id="job_a")
    payload = (
        {"job_id": "job_a", "tenant_id": other_tenant, "error_code": "x", "message": "m"} if body else None
    )
    response = client.request(
        method, f"{JOBS}/job_a{suffix}", json=payload, headers=tenant_headers(other_tenant)
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job.not_found"


def test_running_moves_a_queued_job_to_running(client: TestClient, tenant: str) -> None:
    _create(client, tenant, job_id="job_a")
    response = client.post(f"{JOBS}/job_a/running", headers=tenant_headers(tenant))
    assert response.status_code == 200
    assert response.json()["status"] == "running"


def test_fail_marks_the_job_failed_with_its_error_code(client: TestClient, tenant: str) -> None:
    _create(client, tenant, job_id="job_a")
    failure = {"job_id": "job_a", "tenant_id": tenant, "error_code": "ood.unavailable", "message": "gave up"}
    response = client.post(f"{JOBS}/job_a/fail", json=failure, headers=tenant_headers(tenant))
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert response.json()["error_code"] == "ood.unavailable"


@pytest.mark.parametrize("status", ["done", "rejected"])
def test_fail_never_overrides_a_finished_job(client: TestClient, tenant: str, status: str) -> None:
    _create(client, tenant, job_id="job_a")
    client.put(
        "/internal/v1/reports/job_a",
        json=report_body(tenant, "job_a", status=status),
        headers=tenant_headers(tenant),
    )
    failure = {"job_id": "job_a", "tenant_id": tenant, "error_code": "worker.gave_up", "message": "late"}
    response = client.post(f"{JOBS}/job_a/fail", json=failure, headers=tenant_headers(tenant))
    assert response.status_code == 200
    assert response.json()["status"] == status
    stored = client.get(f"{JOBS}/job_a", headers=tenant_headers(tenant)).json()
    assert stored["status"] == status
    assert stored["result"]["status"] == status


def test_redelivered_running_never_moves_a_done_job_back(client: TestClient, tenant: str) -> None:
    _create(client, tenant, job_id="job_a")
    client.put(
        "/internal/v1/reports/job_a", json=report_body(tenant, "job_a"), headers=tenant_headers(tenant)
    )
    response = client.post(f"{JOBS}/job_a/running", headers=tenant_headers(tenant))
    assert response.json()["status"] == "done"


def test_job_without_heatmap_is_heatmap_not_found(client: TestClient, tenant: str) -> None:
    _create(client, tenant, job_id="job_a")
    response = client.get(f"{JOBS}/job_a/heatmap.png", headers=tenant_headers(tenant))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "heatmap.not_found"


def test_heatmap_is_served_as_png(client: TestClient, tenant: str) -> None:
    _create(client, tenant, job_id="job_a")
    client.put(
        "/internal/v1/reports/job_a",
        json=report_body(tenant, "job_a", heatmap=PNG_BYTES),
        headers=tenant_headers(tenant),
    )
    response = client.get(f"{JOBS}/job_a/heatmap.png", headers=tenant_headers(tenant))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == PNG_BYTES
