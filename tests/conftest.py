"""Shared fixtures. Tests needing PostgreSQL or Redis skip when those are absent, unless
SKINTRIAGE_REQUIRE_SERVICES=1 (set by .ci/run), which turns the skip into a failure."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.fixtures.tiny_bundle import write_tiny_bundle, write_tiny_bundle_v2

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SKINTRIAGE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
POSTGRES_URL = os.environ.get(
    "SKINTRIAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SKINTRIAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under SKINTRIAGE_REQUIRE_SERVICES=1, fail) when a server is unreachable."""
    if _port_open(host, port):
        return
    message = f"{name} not reachable at {host}:{port}"
    if os.environ.get("SKINTRIAGE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} and SKINTRIAGE_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> str:
    """URL of the CI PostgreSQL database `test`."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    """URL of a scratch Redis database on the CI Redis server."""
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, tiny model bundle (see tests/fixtures/tiny_bundle.py)."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny-test" / "0.0.1")


@pytest.fixture(scope="session")
def tiny_bundle_v2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, tiny format-2 bundle: letterbox + Shades of Gray, fused clinical metadata, an OOD
    detector whose rule uses `oe` (tests/fixtures/tiny_bundle.py)."""
    return write_tiny_bundle_v2(tmp_path_factory.mktemp("bundle-v2") / "tiny-test" / "2.0.0")


@pytest.fixture(scope="session")
def ham_images() -> list[Path]:
    """A handful of real HAM10000 images from the shared data (never copied into the repo)."""
    images = sorted((DATA_ROOT / "ham10000" / "images").glob("*.jpg"))[:24]
    if not images:
        pytest.fail(f"no HAM10000 images under {DATA_ROOT}; set SKINTRIAGE_DATA_ROOT")
    return images
