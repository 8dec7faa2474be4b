"""A database that is down answers 503 `dependency.unavailable` with `Retry-After`, never 500
(issue 10): PostgreSQL refusing connections (nothing listens on the port), and a SQLite file that
cannot be opened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.reports.api.app import create_app
from services.reports.config import Settings
from tests.reports.conftest import INTERNAL_TOKEN
from tests.reports.factories import job_body, tenant_headers


@pytest.fixture(
    params=[
        "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2",
        "sqlite:///{tmp}/missing/dir/r.db",
    ]
)
def down(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    url = request.param.format(tmp=tmp_path)
    settings = Settings(database_url=url, internal_token=SecretStr(INTERNAL_TOKEN))
    with TestClient(create_app(settings), headers={"X-Internal-Token": INTERNAL_TOKEN}) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/internal/v1/jobs/job-1", None),
        ("POST", "/internal/v1/jobs", job_body("ten_x", job_id="job-1")),
        ("GET", "/internal/v1/reports", None),
        ("POST", "/internal/v1/auth/verify", {"api_key": "st_" + "a" * 40}),
    ],
)
def test_every_route_answers_503_with_retry_after_while_the_database_is_down(
    down: TestClient, method: str, path: str, body: object
) -> None:
    response = down.request(method, path, json=body, headers=tenant_headers("ten_x"))

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["code"] == "dependency.unavailable"
    assert error["details"] == {"dependency": "database"}
