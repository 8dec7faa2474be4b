"""Health, readiness, metrics, request ids, the error shape of the unexpected."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import respx

from services.gateway.api.app import create_app
from tests.gateway import samples
from tests.gateway.conftest import error_code
from tests.gateway.fakes import INTERNAL_TOKEN, FakeReports, InMemoryPublisher


async def test_healthz_needs_no_api_key(client: httpx.AsyncClient):
    response = await client.get("/healthz", headers={"Authorization": ""})

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_is_ok_when_reports_and_broker_answer(client):
    response = await client.get("/readyz", headers={"Authorization": ""})

    assert response.status_code == 200
    assert response.json()["checks"] == {"reports": "ok", "broker": "ok"}


async def test_readyz_names_the_broker_when_it_is_down(client, publisher: InMemoryPublisher):
    publisher.down = True

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert error_code(response) == "dependency.unavailable"
    assert response.json()["error"]["details"]["failed"] == ["broker"]


async def test_readyz_names_reports_when_it_is_unreachable(client, reports_api: respx.MockRouter):
    reports_api["readyz"].mock(side_effect=httpx.ConnectError("refused"))

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["error"]["details"]["failed"] == ["reports"]


async def test_openapi_is_open_and_documents_the_public_routes(client):
    response = await client.get("/openapi.json", headers={"Authorization": ""})

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/v1/images", "/v1/batches", "/v1/jobs/{job_id}", "/v1/reports", "/readyz"} <= set(paths)
    assert paths["/v1/images"]["post"]["summary"]


async def test_metrics_need_the_internal_token(client):
    response = await client.get("/metrics")

    assert response.status_code == 401
    assert error_code(response) == "auth.invalid_api_key"


async def test_metrics_are_labelled_by_route_template_not_raw_path(client, reports: FakeReports):
    reports.add_job("tenant-a", "job-123")
    await client.get("/v1/jobs/job-123")

    response = await client.get("/metrics", headers={"Authorization": f"Bearer {INTERNAL_TOKEN}"})

    assert response.status_code == 200
    assert 'route="/v1/jobs/{job_id}"' in response.text
    assert "job-123" not in response.text


async def test_request_id_is_made_when_absent_and_returned(client):
    response = await client.get("/healthz")

    assert len(response.headers["X-Request-ID"]) == 32


async def test_unsafe_request_id_is_replaced(client):
    response = await client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})

    assert response.headers["X-Request-ID"] != "bad id\twith spaces"


async def test_request_id_is_in_error_bodies(client):
    response = await client.get("/v1/jobs/x", headers={"Authorization": "", "X-Request-ID": "r-1"})

    assert response.json()["error"]["request_id"] == "r-1"


async def test_unknown_route_answers_not_found_error_body(client):
    response = await client.get("/v2/nothing")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


async def test_unexpected_error_answers_500_internal_without_internals(
    client, reports_api: respx.MockRouter, caplog: pytest.LogCaptureFixture
):
    reports_api["get_job"].mock(side_effect=RuntimeError("secret detail"))

    with caplog.at_level(logging.ERROR):
        response = await client.get("/v1/jobs/job-1", headers={"X-Request-ID": "r-500"})

    assert response.status_code == 500
    assert error_code(response) == "internal"
    assert "secret detail" not in response.text
    assert response.headers["X-Request-ID"] == "r-500"
    assert any(r.exc_info for r in caplog.records)


async def test_access_log_is_one_json_line_without_query_string(client, capsys: pytest.CaptureFixture[str]):
    await client.get("/v1/reports", params={"patient_ref": "Jane-Doe-1970"})

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("message") == "request"]
    assert access and access[-1]["route"] == "/v1/reports"
    assert all("Jane-Doe-1970" not in json.dumps(line) for line in lines)


async def test_upload_log_lines_hold_no_image_data_or_metadata(client, capsys: pytest.CaptureFixture[str]):
    await client.post(
        "/v1/images", files={"file": ("jane-doe.jpg", samples.jpeg())}, data={"patient_ref": "Jane-Doe-1970"}
    )

    out = capsys.readouterr().out
    assert "Jane-Doe-1970" not in out
    assert "jane-doe" not in out
    assert "/9j/" not in out  # base64 of a JPEG's first bytes


async def test_app_starts_with_the_celery_publisher_when_none_is_injected(settings, reports: FakeReports):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            response = await http.get("/readyz")

    assert response.status_code == 200  # memory:// broker
