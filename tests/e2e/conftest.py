"""The real fleet for end-to-end tests: gateway, ood and reports under uvicorn, a Celery worker,
the Alembic migrations and the reports CLI, each a separate OS process (bench/fleet_runner.py).

Two shapes: production (a fresh PostgreSQL database and a flushed Redis database; under
SKINTRIAGE_REQUIRE_SERVICES=1 a missing server fails instead of skipping) and the embedded default
(a SQLite file and kombu's SQLAlchemy broker on SQLite). A failing test gets the tail of every
process's log attached to its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.pool import NullPool

from bench.fleet_runner import Fleet
from services.reports.db.engine import make_engine
from tests.e2e.fleet import EMBEDDED, PRODUCTION, TENANTS, running_fleet


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shipped_bundle: uses models/skintriage-effnet-lite0/2.0.1 and fails (never skips) without it",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Attach the fleet's process logs to the report of a test that failed."""
    report = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Fleet):
                report.sections.append(("fleet process logs", value.logs()))
    return report


@pytest.fixture(scope="module", params=[PRODUCTION, EMBEDDED])
def fleet(
    request: pytest.FixtureRequest, tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The whole fleet on the tiny real bundle, once per module and backend shape."""
    workdir = tmp_path_factory.mktemp(f"fleet-{request.param}")
    with running_fleet(request.param, tiny_bundle_dir, workdir) as started:
        yield started


@pytest.fixture(scope="module")
def gateway(fleet: Fleet) -> Iterator[httpx.Client]:
    """An HTTP client for the public gateway (loopback, no proxies from the environment)."""
    with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def database(fleet: Fleet) -> Iterator[Engine]:
    """The fleet's database, to check what the services stored (not through their APIs)."""
    engine = make_engine(fleet.database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def key_a(fleet: Fleet) -> str:
    return fleet.api_keys[TENANTS[0]]


@pytest.fixture(scope="module")
def key_b(fleet: Fleet) -> str:
    return fleet.api_keys[TENANTS[1]]
