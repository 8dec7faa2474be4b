"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.reports.db.engine import make_engine


def test_healthz_answers_without_a_token(client: TestClient) -> None:
    del client.headers["X-Internal-Token"]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_the_database_answers(client: TestClient) -> None:
    del client.headers["X-Internal-Token"]
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_database_unavailable_when_the_database_is_down(client: TestClient) -> None:
    app = client.app
    healthy = app.state.engine  # type: ignore[attr-defined]
    # Nothing listens on port 1: connecting fails at once.
    down = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    app.state.engine = down  # type: ignore[attr-defined]
    try:
        response = client.get("/readyz")
    finally:
        app.state.engine = healthy  # type: ignore[attr-defined]
        down.dispose()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "dependency.database_unavailable"
