"""Prediction.metadata_used (the clinical fields a format-2 model fused) is stored with the report
and read back as sent; reports from image-only models, and rows stored before migration 0002
added the column, read back as None."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

from services.reports.api.views import report_view
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.models import Report
from tests.reports.factories import job_body, report_body, tenant_headers
from tests.reports.migrate import alembic_config


def _stored_prediction(client: TestClient, tenant: str, metadata_used: Any, omit: bool = False) -> Any:
    job = client.post(
        "/internal/v1/jobs", json=job_body(tenant, job_id="job_m"), headers=tenant_headers(tenant)
    )
    assert job.status_code == 201
    body = report_body(tenant, "job_m")
    if not omit:
        body["prediction"]["metadata_used"] = metadata_used
    put = client.put("/internal/v1/reports/job_m", json=body, headers=tenant_headers(tenant))
    assert put.status_code == 200
    return client.get("/internal/v1/jobs/job_m", headers=tenant_headers(tenant)).json()["result"][
        "prediction"
    ]


@pytest.mark.parametrize("used", [["age", "sex", "body_site"], ["body_site"], []])
def test_metadata_used_is_stored_and_read_back_as_sent(
    client: TestClient, tenant: str, used: list[str]
) -> None:
    assert _stored_prediction(client, tenant, used)["metadata_used"] == used


def test_a_prediction_without_metadata_used_reads_back_as_none(client: TestClient, tenant: str) -> None:
    assert _stored_prediction(client, tenant, None, omit=True)["metadata_used"] is None


def test_an_unknown_field_name_is_refused(client: TestClient, tenant: str) -> None:
    client.post("/internal/v1/jobs", json=job_body(tenant, job_id="job_m"), headers=tenant_headers(tenant))
    body = report_body(tenant, "job_m")
    body["prediction"]["metadata_used"] = ["patient_ref"]

    response = client.put("/internal/v1/reports/job_m", json=body, headers=tenant_headers(tenant))

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request.invalid"


def _insert(connection: Connection, table: str, row: dict[str, Any]) -> None:
    names = ", ".join(row)
    values = ", ".join(f":{name}" for name in row)
    connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({values})"), row)


def test_a_report_stored_before_migration_0002_reads_back_with_metadata_used_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    command.upgrade(alembic_config(url), "0001")
    engine = make_engine(url)
    now = "2026-11-01 12:00:00.000000"
    try:
        with engine.begin() as connection:
            _insert(connection, "tenants", {"id": "t1", "name": "acme", "created_at": now})
            job = {
                "id": "j1",
                "tenant_id": "t1",
                "status": "done",
                "image": b"\x00",
                "media_type": "image/png",
            }
            job |= {"width": 1, "height": 1, "image_sha256": "ab", "created_at": now, "updated_at": now}
            _insert(connection, "jobs", job)
            report = {"job_id": "j1", "tenant_id": "t1", "status": "done", "triage_level": "routine"}
            report |= {"triage_threshold": 0.1, "top_class": "nv", "malignant_probability": 0.2}
            report |= {"probabilities": '{"nv": 1.0}', "conformal_set": '["nv"]', "conformal_coverage": 0.9}
            report |= {"model_name": "m", "model_version": "1.0.0", "model_sha256": "ab", "timings": "{}"}
            _insert(connection, "reports", report | {"completed_at": now})
        command.upgrade(alembic_config(url), "head")

        with make_sessionmaker(engine)() as session:
            stored = session.get(Report, "j1")
            assert stored is not None
            prediction = report_view(stored).prediction
        assert prediction is not None and prediction.top_class == "nv"
        assert prediction.metadata_used is None
    finally:
        engine.dispose()


def test_migration_0002_downgrades_and_upgrades_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "0001")
    command.upgrade(config, "head")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            columns = [row[1] for row in connection.execute(text("PRAGMA table_info(reports)"))]
        assert columns.count("metadata_used") == 1
    finally:
        engine.dispose()
