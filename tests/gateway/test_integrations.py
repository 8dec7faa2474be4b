"""The issue 11 routes as the gateway serves them: proxied to reports with the caller's tenant,
documents passed through with their media types and no-store, reports' answers (201 vs 200, 409,
404) kept, and bodies checked against the shared contracts before they leave the gateway."""

from __future__ import annotations

import httpx
import respx

from tests.gateway.conftest import error_code
from tests.gateway.fakes import TENANT_A

DELIVERY = {
    "delivery_id": "dlv_1",
    "kind": "webhook",
    "event": "job.finished",
    "status": "failed",
    "webhook_id": "wh_1",
    "job_id": "job-1",
    "attempts": 1,
    "last_status_code": 410,
    "last_error": "webhook answered 410",
    "created_at": "2026-12-01T08:00:00Z",
    "give_up_at": "2026-12-02T08:00:00Z",
}
ENDPOINT = {
    "base_url": "https://ehr.example/fhir",
    "token_url": "https://ehr.example/token",
    "client_id": "c",
    "scope": "system/Observation.c",
    "algorithm": "ES384",
    "key_id": "k1",
    "jwks": {"keys": [{"kty": "EC", "kid": "k1"}]},
    "created_at": "2026-12-01T08:00:00Z",
    "updated_at": "2026-12-01T08:00:00Z",
}


async def test_the_fhir_bundle_is_passed_through_as_fhir_json_for_the_callers_tenant(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    route = reports_api.get("/internal/v1/jobs/job-1/fhir").respond(
        200, content=b'{"resourceType":"Bundle"}', headers={"content-type": "application/fhir+json"}
    )

    response = await client.get("/v1/jobs/job-1/fhir", params={"type": "transaction"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/fhir+json"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.json() == {"resourceType": "Bundle"}
    sent = route.calls.last.request
    assert sent.url.params["type"] == "transaction"
    assert sent.headers["X-Tenant-Id"] == TENANT_A


async def test_an_unknown_bundle_type_is_refused_before_reports_is_asked(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    route = reports_api.get("/internal/v1/jobs/job-1/fhir")

    response = await client.get("/v1/jobs/job-1/fhir", params={"type": "document"})

    assert response.status_code == 422
    assert not route.called


async def test_a_job_without_a_result_answers_reports_409(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    body = {"error": {"code": "job.not_finished", "message": "the job has no result yet"}}
    reports_api.get("/internal/v1/jobs/job-1/report.pdf").respond(409, json=body)

    response = await client.get("/v1/jobs/job-1/report.pdf")

    assert response.status_code == 409
    assert error_code(response) == "job.not_finished"


async def test_the_pdf_comes_back_inline_with_a_filename(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    reports_api.get("/internal/v1/jobs/job-1/report.pdf").respond(
        200, content=b"%PDF-1.4 ...", headers={"content-type": "application/pdf"}
    )

    response = await client.get("/v1/jobs/job-1/report.pdf")

    assert response.content == b"%PDF-1.4 ..."
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'inline; filename="skintriage-job-1.pdf"'


async def test_the_first_fhir_endpoint_is_created_and_later_ones_replace_it(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    route = reports_api.put("/internal/v1/fhir-endpoint")
    route.side_effect = [httpx.Response(201, json=ENDPOINT), httpx.Response(200, json=ENDPOINT)]
    config = {
        "base_url": "https://ehr.example/fhir",
        "token_url": "https://ehr.example/token",
        "client_id": "c",
    }

    first = await client.put("/v1/fhir-endpoint", json=config)
    second = await client.put("/v1/fhir-endpoint", json={**config, "rotate_key": True})

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["jwks"] == ENDPOINT["jwks"]
    assert route.calls[1].request.content and b'"rotate_key":true' in route.calls[1].request.content


async def test_receiver_urls_must_be_https_without_credentials(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    route = reports_api.post("/internal/v1/webhooks")
    for url in ("http://hooks.example/x", "https://user:pw@hooks.example/x", "https://[::1]/x"):
        response = await client.post("/v1/webhooks", json={"url": url, "events": ["job.finished"]})
        assert response.status_code == 422, url
    assert not route.called


async def test_a_replay_and_a_delivery_log_are_checked_against_the_contract(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    reports_api.post("/internal/v1/deliveries/dlv_1/replay").respond(
        200, json={**DELIVERY, "status": "pending"}
    )
    reports_api.get("/internal/v1/jobs/job-1/deliveries").respond(200, json={"items": [{"delivery_id": "x"}]})

    replayed = await client.post("/v1/deliveries/dlv_1/replay")
    garbled = await client.get("/v1/jobs/job-1/deliveries")

    assert replayed.status_code == 200 and replayed.json()["status"] == "pending"
    assert garbled.status_code == 502
    assert error_code(garbled) == "upstream.invalid_response"


async def test_a_405_lists_every_method_of_a_path_with_a_route_per_method(client: httpx.AsyncClient) -> None:
    webhooks = await client.request("PATCH", "/v1/webhooks")
    endpoint = await client.request("POST", "/v1/fhir-endpoint")

    assert webhooks.status_code == endpoint.status_code == 405
    assert webhooks.headers["allow"] == "GET, POST"
    assert endpoint.headers["allow"] == "DELETE, GET, PUT"
