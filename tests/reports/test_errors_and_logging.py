"""One error shape for every failure, and one JSON log line per request without PHI."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.common.json_logging import JsonFormatter
from services.reports.db.engine import make_engine
from tests.reports.factories import tenant_headers


def test_invalid_body_is_422_request_invalid_with_field_locations(client: TestClient, tenant: str) -> None:
    response = client.post("/internal/v1/jobs", json={"job_id": "x"}, headers=tenant_headers(tenant))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "request.invalid"
    assert ["body", "image"] in [detail["loc"] for detail in error["details"]]


def test_validation_details_never_echo_the_input(client: TestClient, tenant: str) -> None:
    body = {"job_id": "x", "tenant_id": tenant, "metadata": {"patient_ref": "SECRET-PATIENT", "age": -1}}
    response = client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant))
    assert response.status_code == 422
    assert "SECRET-PATIENT" not in response.text


def test_unexpected_error_is_500_internal_without_internals(client: TestClient) -> None:
    def explode() -> None:
        raise RuntimeError("connection string postgresql://user:pw@db")

    client.app.add_api_route("/explode", explode)  # type: ignore[attr-defined]
    response = client.get("/explode", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal"
    assert response.json()["error"]["request_id"] == "req-500"
    assert "postgresql" not in response.text


def test_unknown_route_is_404_route_not_found(client: TestClient) -> None:
    response = client.get("/internal/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route.not_found"


def test_request_id_is_taken_from_x_request_id(client: TestClient) -> None:
    response = client.get("/internal/v1/jobs/any", headers={"X-Request-ID": "req-42", "X-Internal-Token": ""})
    assert response.json()["error"]["request_id"] == "req-42"
    assert response.headers["X-Request-ID"] == "req-42"


def test_each_request_logs_one_json_line_without_query_or_patient_ref(
    client: TestClient, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="services.reports.request"):
        client.get(
            "/internal/v1/reports",
            params={"patient_ref": "PATIENT-XYZ"},
            headers={**tenant_headers(tenant), "X-Request-ID": "req-log"},
        )
    records = [r for r in caplog.records if r.name == "services.reports.request"]
    assert len(records) == 1
    line = JsonFormatter("reports").format(records[0])
    assert "\n" not in line
    assert "PATIENT-XYZ" not in line
    logged = json.loads(line)
    assert logged["route"] == "/internal/v1/reports"
    assert logged["status"] == 200
    assert logged["request_id"] == "req-log"
    assert logged["tenant_id"] == tenant


def test_unexpected_error_is_logged_with_its_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> None:
        raise RuntimeError("boom")

    client.app.add_api_route("/explode", explode)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="services.reports.request"):
        client.get("/explode")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "RuntimeError: boom" in json.loads(JsonFormatter("reports").format(errors[0]))["exc"]


def test_database_errors_never_carry_statement_parameters(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with pytest.raises(DBAPIError) as raised, engine.connect() as connection:
            connection.execute(text("SELECT * FROM no_such_table WHERE ref = :ref"), {"ref": "PATIENT-XYZ"})
    finally:
        engine.dispose()
    assert "PATIENT-XYZ" not in str(raised.value)
