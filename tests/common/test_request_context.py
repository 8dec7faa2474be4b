"""The shared request-id rules and the request-context middleware, through a tiny app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common.request_context import RequestContextMiddleware
from services.common.request_id import accept_request_id, bound_request_id, current_request_id

JsonLines = Callable[[], list[dict[str, Any]]]


def test_request_id_is_made_when_absent_and_echoed(client: TestClient) -> None:
    response = client.get("/lesions/l-1")

    request_id = response.headers["X-Request-ID"]
    assert len(request_id) == 32
    assert response.json()["request_id"] == request_id


def test_well_formed_request_id_is_adopted_and_echoed(client: TestClient) -> None:
    response = client.get("/lesions/l-1", headers={"X-Request-ID": "gw-req.42:a_b"})

    assert response.headers["X-Request-ID"] == "gw-req.42:a_b"
    assert response.json()["request_id"] == "gw-req.42:a_b"


@pytest.mark.parametrize("incoming", ["bad id with spaces", 'quote"d', "x" * 129, ""])
def test_malformed_request_id_is_replaced_with_a_new_one(client: TestClient, incoming: str) -> None:
    response = client.get("/lesions/l-1", headers={"X-Request-ID": incoming})

    request_id = response.headers["X-Request-ID"]
    assert request_id != incoming
    assert len(request_id) == 32
    assert response.json()["request_id"] == request_id


def test_request_id_with_a_trailing_newline_is_not_adopted() -> None:
    # A task header or payload is not checked by an HTTP parser; `$` would let this through.
    assert accept_request_id("req-1\n") != "req-1\n"
    assert accept_request_id("req-1") == "req-1"
    assert len(accept_request_id(None)) == 32


def test_error_bodies_carry_the_request_id(client: TestClient) -> None:
    response = client.get("/missing", headers={"X-Request-ID": "req-404"})

    assert response.json()["error"]["request_id"] == "req-404"
    assert response.headers["X-Request-ID"] == "req-404"


def test_every_log_line_of_a_request_carries_its_request_id(
    client: TestClient, json_lines: JsonLines
) -> None:
    client.get("/lesions/l-1", headers={"X-Request-ID": "req-log"})

    lines = json_lines()
    route_line = next(line for line in lines if line["message"] == "lesion.read")
    assert route_line["request_id"] == "req-log"
    assert route_line["service"] == "tiny"


def test_one_request_line_names_the_route_template_never_the_path_or_query(
    client: TestClient, json_lines: JsonLines
) -> None:
    client.get("/lesions/PATIENT-JANE", params={"patient_ref": "MRN-0042"}, headers={"X-Request-ID": "r-1"})

    lines = json_lines()
    request_lines = [line for line in lines if line["message"] == "request"]
    assert len(request_lines) == 1
    line = request_lines[0]
    assert line["logger"] == "services.tiny.request"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/lesions/{lesion_id}", 200)
    assert line["request_id"] == "r-1"
    assert line["tenant_id"] == "tenant-a"
    assert isinstance(line["duration_ms"], float)
    assert "PATIENT-JANE" not in str(lines)
    assert "MRN-0042" not in str(lines)


def test_unmatched_path_is_logged_as_unmatched(client: TestClient, json_lines: JsonLines) -> None:
    client.get("/typed-by-a-caller/MRN-0042")

    request_line = next(line for line in json_lines() if line["message"] == "request")
    assert request_line["route"] == "unmatched"
    assert request_line["status"] == 404


def test_unexpected_exception_is_500_internal_without_internals(client: TestClient) -> None:
    response = client.get("/boom", headers={"X-Request-ID": "req-500"})

    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error", "details": None, "request_id": "req-500"}
    }
    assert response.headers["X-Request-ID"] == "req-500"
    assert "hunter2" not in response.text


def test_unexpected_exception_is_logged_with_its_traceback(client: TestClient, json_lines: JsonLines) -> None:
    client.get("/boom", headers={"X-Request-ID": "req-500"})

    lines = json_lines()
    failure = next(line for line in lines if line["message"] == "unhandled error")
    assert failure["level"] == "ERROR"
    assert failure["request_id"] == "req-500"
    assert failure["route"] == "/boom"
    assert "RuntimeError" in failure["exc"]
    request_line = next(line for line in lines if line["message"] == "request")
    assert request_line["status"] == 500


class Recorder:
    """A RequestObserver that remembers what it heard."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, int]] = []
        self.errors: list[str] = []

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.append((method, route, status))

    def error_rendered(self, code: str) -> None:
        self.errors.append(code)


def test_observer_hears_every_request_and_the_last_resort_500() -> None:
    recorder = Recorder()
    app = FastAPI()

    @app.get("/boom/{n}")
    def boom(n: int) -> None:
        raise RuntimeError("no")

    app.add_middleware(RequestContextMiddleware, service="tiny", observer=recorder)
    with TestClient(app) as client:
        client.get("/boom/1")

    assert recorder.requests == [("GET", "/boom/{n}", 500)]
    assert recorder.errors == ["internal"]


def test_request_id_is_unbound_after_the_request(client: TestClient) -> None:
    client.get("/lesions/l-1", headers={"X-Request-ID": "req-gone"})

    assert current_request_id() is None


def test_bound_request_id_is_seen_inside_the_block_only() -> None:
    with bound_request_id("task-req-1"):
        assert current_request_id() == "task-req-1"
    assert current_request_id() is None
