"""reports' outage answer (503 `dependency.unavailable`, `Retry-After`) reaches the client as it is:
never a 500, and with the wait it asked for; the gateway's own outage answers (reports or the broker
unreachable: 503 `upstream.unavailable`) say when to come back too."""

from __future__ import annotations

import httpx
import respx

from tests.gateway import samples
from tests.gateway.conftest import error_code
from tests.gateway.fakes import InMemoryPublisher


async def test_a_database_outage_in_reports_is_a_503_with_retry_after(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    outage = {
        "error": {
            "code": "dependency.unavailable",
            "message": "database is unavailable",
            "details": {"dependency": "database"},
        }
    }
    reports_api["get_job"].mock(return_value=httpx.Response(503, json=outage, headers={"Retry-After": "5"}))

    response = await client.get("/v1/jobs/0123456789abcdef0123456789abcdef")

    assert response.status_code == 503
    assert error_code(response) == "dependency.unavailable"
    assert response.headers["Retry-After"] == "5"


async def test_an_unreachable_reports_is_a_503_that_says_when_to_come_back(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    reports_api["get_job"].mock(side_effect=httpx.ConnectError("refused"))

    response = await client.get("/v1/jobs/0123456789abcdef0123456789abcdef")

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"
    assert response.headers["Retry-After"] == "5"


async def test_a_broker_outage_is_a_503_that_says_when_to_come_back(
    client: httpx.AsyncClient, publisher: InMemoryPublisher
) -> None:
    publisher.down = True

    response = await client.post("/v1/images", files={"file": ("a.jpg", samples.jpeg(), "image/jpeg")})

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"
    assert response.headers["Retry-After"] == "5"
