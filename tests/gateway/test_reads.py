"""Reads proxied to reports: jobs, stored images, heatmaps, the report list; and their errors."""

from __future__ import annotations

import httpx
import pytest
import respx

from tests.gateway import samples
from tests.gateway.conftest import error_code
from tests.gateway.fakes import TENANT_A, TENANT_B, FakeReports


async def test_job_is_read_from_reports_with_the_callers_tenant(client, reports: FakeReports, reports_api):
    reports.add_job(TENANT_A, "job-1", status="done")

    response = await client.get("/v1/jobs/job-1")

    assert response.status_code == 200
    assert response.json()["result"]["triage_level"] == "routine"
    call = reports_api.calls.last
    assert call.request.headers["X-Tenant-Id"] == TENANT_A


async def test_another_tenants_job_is_not_found(client, reports: FakeReports):
    reports.add_job(TENANT_B, "job-b")

    response = await client.get("/v1/jobs/job-b")

    assert response.status_code == 404
    assert error_code(response) == "job.not_found"


async def test_another_tenants_job_image_is_not_found(client, reports: FakeReports):
    reports.add_job(TENANT_B, "job-b")

    response = await client.get("/v1/jobs/job-b/image")

    assert response.status_code == 404
    assert error_code(response) == "job.not_found"


async def test_job_image_is_the_stored_copy_and_never_cached(client, reports: FakeReports):
    created = await client.post("/v1/images", files={"file": ("a.png", samples.png())})
    job_id = created.json()["job_id"]

    response = await client.get(f"/v1/jobs/{job_id}/image")

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == reports.stored_image(job_id)
    assert "no-store" in response.headers["Cache-Control"]


async def test_heatmap_is_proxied_as_png(client, reports_api: respx.MockRouter):
    png = samples.png()
    reports_api.get("/internal/v1/jobs/job-1/heatmap.png").mock(
        return_value=httpx.Response(200, content=png, headers={"Content-Type": "image/png"})
    )

    response = await client.get("/v1/jobs/job-1/heatmap.png")

    assert response.status_code == 200
    assert response.content == png
    assert response.headers["content-type"] == "image/png"


async def test_missing_heatmap_code_is_passed_through(client, reports_api: respx.MockRouter):
    reports_api.get("/internal/v1/jobs/job-1/heatmap.png").mock(
        return_value=httpx.Response(404, json={"error": {"code": "heatmap.not_found", "message": "none"}})
    )

    response = await client.get("/v1/jobs/job-1/heatmap.png")

    assert response.status_code == 404
    assert error_code(response) == "heatmap.not_found"


async def test_report_list_forwards_filters_and_returns_the_page(client, reports_api: respx.MockRouter):
    route = reports_api["list_reports"].mock(
        return_value=httpx.Response(200, json={"items": [], "next_cursor": "c2"})
    )

    response = await client.get(
        "/v1/reports",
        params={
            "patient_ref": "pat-1",
            "triage_level": "urgent",
            "status": "done",
            "ood_decision": "accepted",
            "since": "2024-01-01T00:00:00Z",
            "limit": "10",
            "cursor": "c1",
        },
    )

    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": "c2"}
    params = route.calls.last.request.url.params
    assert params["patient_ref"] == "pat-1"
    assert params["triage_level"] == "urgent"
    assert params["status"] == "done"
    assert params["ood_decision"] == "accepted"
    assert params["since"].startswith("2024-01-01T00:00:00")
    assert params["limit"] == "10"
    assert params["cursor"] == "c1"
    assert route.calls.last.request.headers["X-Tenant-Id"] == TENANT_A


async def test_report_list_with_unknown_triage_level_is_refused_with_request_invalid(client):
    response = await client.get("/v1/reports", params={"triage_level": "panic"})

    assert response.status_code == 422
    assert error_code(response) == "request.invalid"
    assert response.json()["error"]["details"][0]["loc"] == ["query", "triage_level"]


async def test_reports_timeout_answers_upstream_unavailable(client, reports_api: respx.MockRouter):
    reports_api["get_job"].mock(side_effect=httpx.ReadTimeout("slow"))

    response = await client.get("/v1/jobs/job-1")

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"


async def test_reports_503_without_error_body_answers_upstream_unavailable(client, reports_api):
    reports_api["get_job"].mock(return_value=httpx.Response(503, text="Service Unavailable"))

    response = await client.get("/v1/jobs/job-1")

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"


async def test_reports_body_breaking_its_contract_answers_invalid_response(client, reports_api):
    reports_api["get_job"].mock(return_value=httpx.Response(200, json={"nope": 1}))

    response = await client.get("/v1/jobs/job-1")

    assert response.status_code == 502
    assert error_code(response) == "upstream.invalid_response"


async def test_downstream_error_status_and_code_are_passed_through(client, reports_api):
    reports_api["list_reports"].mock(
        return_value=httpx.Response(400, json={"error": {"code": "cursor.invalid", "message": "bad cursor"}})
    )

    response = await client.get("/v1/reports", params={"cursor": "garbage"})

    assert response.status_code == 400
    assert error_code(response) == "cursor.invalid"


async def test_id_that_is_not_an_id_is_refused_without_asking_reports(client, reports_api):
    response = await client.get("/v1/jobs/..")

    assert response.status_code in (404, 422)
    assert not any("/internal/v1/jobs" in str(c.request.url) for c in reports_api.calls)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"patient_ref": "a\x00b"}, "patient_ref"),
        ({"since": "1700000000"}, "since"),
        ({"until": "1700000000.5"}, "until"),
        ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
        ({"until": "9999-12-31T23:59:59-23:59"}, "until"),
    ],
)
async def test_report_list_refuses_control_characters_and_bare_number_timestamps(client, params, field):
    response = await client.get("/v1/reports", params=params)

    assert response.status_code == 422
    assert error_code(response) == "request.invalid"
    assert response.json()["error"]["details"][0]["loc"] == ["query", field]


async def test_report_list_still_takes_iso_8601_timestamps(client, reports_api: respx.MockRouter):
    response = await client.get("/v1/reports", params={"since": "2026-11-30T12:00:00Z"})

    assert response.status_code == 200
