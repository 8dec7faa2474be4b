"""reports' outage answer (503 `dependency.unavailable`, `Retry-After`) reaches the client as it is:
never a 500, and with the wait it asked for."""

from __future__ import annotations

import httpx
import respx

from tests.gateway.conftest import error_code


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
