"""The worker's report upsert: idempotent on job_id, finishing the job."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.reports.db import reports as reports_db
from services.reports.db.models import Report
from tests.reports.factories import PNG_BYTES, job_body, report_body, tenant_headers


@pytest.fixture
def job_id(client: TestClient, tenant: str) -> str:
    response = client.post(
        "/internal/v1/jobs", json=job_body(tenant, job_id="job_r"), headers=tenant_headers(tenant)
    )
    assert response.status_code == 201
    return "job_r"


def _put(client: TestClient, tenant: str, job_id: str, body: dict[str, Any]) -> Any:
    return client.put(f"/internal/v1/reports/{job_id}", json=body, headers=tenant_headers(tenant))


def _report_rows(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(Report)) or 0


def test_report_upsert_finishes_the_job_with_its_result(client: TestClient, tenant: str, job_id: str) -> None:
    response = _put(client, tenant, job_id, report_body(tenant, job_id, heatmap=PNG_BYTES))
    assert response.status_code == 200
    job = client.get(f"/internal/v1/jobs/{job_id}", headers=tenant_headers(tenant)).json()
    assert job["status"] == "done"
    result = job["result"]
    assert result["triage_level"] == "urgent"
    assert result["prediction"]["top_class"] == "mel"
    assert result["ood"]["decision"] == "accepted"
    assert result["model"]["version"] == "0.0.1"
    assert result["has_heatmap"] is True
    assert result["disclaimer"]


def test_a_late_redelivery_never_rewrites_a_finished_jobs_report(
    client: TestClient, db: Session, tenant: str, job_id: str
) -> None:
    _put(client, tenant, job_id, report_body(tenant, job_id, triage_level="urgent"))
    second = _put(client, tenant, job_id, report_body(tenant, job_id, triage_level="routine"))
    assert second.status_code == 200
    assert second.json()["result"]["triage_level"] == "urgent"  # the first result stands
    assert _report_rows(db) == 1


def test_racing_report_inserts_leave_one_row(
    client: TestClient, db: Session, tenant: str, job_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another delivery commits its row after this one looked and found none.
    real_apply = reports_db._apply
    applied: list[Report] = []

    def apply_after_rival_commits(report: Report, *args: Any) -> None:
        applied.append(report)
        if len(applied) == 1:
            rival = Report(job_id=job_id, tenant_id=tenant)
            real_apply(rival, *args)
            db.add(rival)
            db.commit()
        real_apply(report, *args)

    monkeypatch.setattr(reports_db, "_apply", apply_after_rival_commits)
    response = _put(client, tenant, job_id, report_body(tenant, job_id, triage_level="monitor"))
    assert response.status_code == 200
    assert response.json()["result"]["triage_level"] == "monitor"
    assert len(applied) == 2  # the first insert collided; the retry updated the rival's row
    assert _report_rows(db) == 1


def test_rejected_report_carries_the_ood_verdict_and_no_triage_level(
    client: TestClient, tenant: str, job_id: str
) -> None:
    response = _put(
        client, tenant, job_id, report_body(tenant, job_id, status="rejected", decision="rejected_ood")
    )
    job = response.json()
    assert job["status"] == "rejected"
    assert job["error_code"] == "ood.rejected"
    assert job["result"]["triage_level"] is None
    assert job["result"]["prediction"] is None
    assert job["result"]["ood"]["decision"] == "rejected_ood"


def test_report_for_a_failed_job_replaces_the_failure(client: TestClient, tenant: str, job_id: str) -> None:
    failure = {"job_id": job_id, "tenant_id": tenant, "error_code": "worker.gave_up", "message": "m"}
    client.post(f"/internal/v1/jobs/{job_id}/fail", json=failure, headers=tenant_headers(tenant))
    job = _put(client, tenant, job_id, report_body(tenant, job_id)).json()
    assert job["status"] == "done"
    assert job["error_code"] is None


def test_report_for_an_unknown_job_is_job_not_found(client: TestClient, tenant: str) -> None:
    response = _put(client, tenant, "job_missing", report_body(tenant, "job_missing"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job.not_found"


def test_report_for_another_tenants_job_is_job_not_found(
    client: TestClient, db: Session, tenant: str, other_tenant: str, job_id: str
) -> None:
    response = _put(client, other_tenant, job_id, report_body(other_tenant, job_id))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "job.not_found"
    assert _report_rows(db) == 0


@pytest.mark.parametrize("status", ["queued", "running", "failed"])
def test_report_with_an_unfinished_status_is_report_invalid(
    client: TestClient, tenant: str, job_id: str, status: str
) -> None:
    response = _put(client, tenant, job_id, report_body(tenant, job_id, status=status))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "report.invalid"


def test_heatmap_that_is_not_a_png_is_report_invalid(client: TestClient, tenant: str, job_id: str) -> None:
    response = _put(client, tenant, job_id, report_body(tenant, job_id, heatmap=b"GIF89a..."))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "report.invalid"


def test_path_job_id_differing_from_body_is_id_mismatch(client: TestClient, tenant: str, job_id: str) -> None:
    response = _put(client, tenant, job_id, report_body(tenant, "job_other"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "request.id_mismatch"
