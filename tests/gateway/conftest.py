"""The gateway app under test: reports faked with respx, tasks kept by an in-memory publisher."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from services.gateway.api.app import create_app
from services.gateway.config import Settings
from tests.gateway.fakes import INTERNAL_TOKEN, KEY_A, REPORTS_URL, FakeReports, InMemoryPublisher

# Small limits keep the oversized-upload tests cheap.
MAX_UPLOAD_BYTES = 200_000


def make_settings(**overrides: Any) -> Settings:
    """Test settings; keyword arguments override single fields."""
    values: dict[str, Any] = {
        "internal_token": INTERNAL_TOKEN,
        "reports_url": REPORTS_URL,
        "broker_url": "memory://",
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "max_batch_items": 5,
        "max_batch_upload_bytes": 2_000_000,
        "max_archive_entries": 20,
        "max_archive_uncompressed_bytes": 1_000_000,
        "max_wait_seconds": 5,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def publisher() -> InMemoryPublisher:
    return InMemoryPublisher()


@pytest.fixture
def reports_api() -> Iterator[respx.MockRouter]:
    """respx router for reports' base URL; any request it has no route for fails the test."""
    with respx.mock(base_url=REPORTS_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
def reports(reports_api: respx.MockRouter) -> FakeReports:
    fake = FakeReports()
    fake.install(reports_api)
    return fake


@pytest.fixture
async def client(
    settings: Settings, publisher: InMemoryPublisher, reports: FakeReports
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the app, lifespan included, authenticated as tenant A."""
    app = create_app(settings, publisher=publisher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {KEY_A}"},
        ) as http:
            yield http


def error_code(response: httpx.Response) -> str:
    """The machine code of an ErrorBody response."""
    code = response.json()["error"]["code"]
    assert isinstance(code, str)
    return code
