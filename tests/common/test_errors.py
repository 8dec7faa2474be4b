"""The shared error handlers: one body shape for every failure, codes a client can rely on."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from contracts.errors import DomainError, ErrorBody
from services.common.errors import RequestInvalidError, error_responses, install_error_handlers
from services.common.request_context import RequestContextMiddleware


def test_domain_error_renders_its_status_code_message_details_and_request_id(client: TestClient) -> None:
    response = client.get("/missing", headers={"X-Request-ID": "req-1"})

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "lesion.not_found",
            "message": "no such lesion",
            "details": {"lesion_id": "l-1"},
            "request_id": "req-1",
        }
    }


def test_invalid_body_is_422_request_invalid_with_field_locations(client: TestClient) -> None:
    response = client.post("/measurements", json={"age": 200})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "request.invalid"
    locations = [detail["loc"] for detail in error["details"]]
    assert ["body", "patient_ref"] in locations
    assert ["body", "age"] in locations
    assert all(set(detail) == {"loc", "msg", "type"} for detail in error["details"])


def test_validation_details_never_echo_the_rejected_input(client: TestClient) -> None:
    response = client.post("/measurements", json={"patient_ref": "MRN-SECRET-7", "age": "MRN-SECRET-8"})

    assert response.status_code == 422
    assert "MRN-SECRET" not in response.text


def test_unknown_route_is_404_route_not_found(client: TestClient) -> None:
    response = client.get("/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route.not_found"


def test_wrong_method_is_405_route_method_not_allowed_with_allow_header(client: TestClient) -> None:
    response = client.delete("/missing")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "route.method_not_allowed"
    assert response.headers["Allow"] == "GET"


def _app_raising(exc: Exception, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/fail")
    def fail() -> None:
        raise exc

    install_error_handlers(app, **options)
    app.add_middleware(RequestContextMiddleware, service="tiny")
    return app


def test_request_invalid_error_has_the_schema_failures_code() -> None:
    app = _app_raising(RequestInvalidError("send either files or an archive"))

    response = TestClient(app).get("/fail")

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request.invalid"


def test_a_service_may_rename_http_error_codes() -> None:
    app = _app_raising(RuntimeError("unused"), http_codes={404: "not_found"})

    response = TestClient(app).get("/elsewhere")

    assert response.json()["error"]["code"] == "not_found"


def test_challenge_is_sent_with_every_401_when_configured() -> None:
    class MissingKeyError(DomainError):
        code, status = "auth.missing_api_key", 401

    app = _app_raising(MissingKeyError("send a key"), challenge='Bearer realm="tiny"')

    response = TestClient(app).get("/fail")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tiny"'


def test_observer_hears_the_code_of_each_rendered_error() -> None:
    heard: list[str] = []

    class Observer:
        def error_rendered(self, code: str) -> None:
            heard.append(code)

    app = _app_raising(RequestInvalidError("no"), observer=Observer())
    with TestClient(app) as client:
        client.get("/fail")
        client.get("/unknown")

    assert heard == ["request.invalid", "route.not_found"]


def test_openapi_documents_error_statuses_as_the_error_body() -> None:
    responses = error_responses(401, 503)

    assert set(responses) == {401, 503}
    assert all(entry["model"] is ErrorBody for entry in responses.values())
