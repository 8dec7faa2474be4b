"""The two backend shapes the end-to-end tests run the fleet on, and a started fleet for them.

The processes themselves are started by bench/fleet_runner.py (shared with the fleet benchmark),
which runs the `make run` launcher's commands (scripts/run_fleet.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.fleet_runner import (
    Backends,
    Fleet,
    embedded_backends,
    flushed_redis_database,
    fresh_postgres_database,
)
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service

E2E_REDIS_DB = 13  # a database of its own (tests/inference's worker e2e uses 14, redis_url 15)
TENANTS = ("tenant-a", "tenant-b")
# Production shape: skips without the servers, fails under SKINTRIAGE_REQUIRE_SERVICES=1.
PRODUCTION = pytest.param("postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis])
EMBEDDED = "embedded"


@contextmanager
def backends(shape: str, workdir: Path) -> Iterator[Backends]:
    """Backends of this fleet's own: a fresh PostgreSQL database (dropped afterwards) and a
    flushed Redis database, or SQLite files under `workdir`."""
    if shape == EMBEDDED:
        yield embedded_backends(workdir / "var")
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    with (
        fresh_postgres_database(POSTGRES_URL) as database_url,
        flushed_redis_database(REDIS_URL, E2E_REDIS_DB) as broker_url,
    ):
        yield Backends(shape, database_url, broker_url)


@contextmanager
def running_fleet(shape: str, bundle_dir: Path, workdir: Path) -> Iterator[Fleet]:
    """A started fleet with an API key per tenant; a process that died meanwhile is an error."""
    with backends(shape, workdir) as chosen, Fleet(chosen, bundle_dir, workdir, TENANTS) as fleet:
        yield fleet
        fleet.check_alive()
