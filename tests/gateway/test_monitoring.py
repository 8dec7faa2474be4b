"""`GET /v1/monitoring` as the gateway serves it: admins only (403 `auth.forbidden` for clinicians
and integrators, before reports is asked), proxied to reports with the caller's tenant, user and
window, reports' 422 passed through, and the body checked against contracts.monitoring. The
figures themselves are tested against real databases in tests/reports/test_monitoring.py."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from contracts.users import ACTOR_HEADER, Actor
from tests.gateway.conftest import error_code
from tests.gateway.fakes import TENANT_A, FakeReports

MONITORING = "/internal/v1/monitoring"
FIGURES: dict[str, Any] = {
    "since": "2026-10-01T00:00:00Z",
    "until": "2026-11-01T00:00:00Z",
    "bucket": "week",
    "models": [
        {
            "model": {"name": "skin-triage", "version": "1.0.0", "sha256": "a" * 64},
            "results": 13,
            "rejected": 2,
            "reviewed": 11,
            "overridden": 4,
            "override_rate": 4 / 11,
            "confirmed": 7,
            "malignant_sensitivity": {"value": 0.75, "ci_low": 0.300642, "ci_high": 0.954413, "positives": 4},
            "specificity": {"value": 2 / 3, "ci_low": 0.20766, "ci_high": 0.938508, "negatives": 3},
            "by_site": [
                {
                    "key": "face",
                    "confirmed": 2,
                    "malignant_sensitivity": {
                        "value": 0.0,
                        "ci_low": 0.0,
                        "ci_high": 0.793451,
                        "positives": 1,
                    },
                    "specificity": None,
                }
            ],
            "by_age_band": [],
        }
    ],
    "ood_rejection": [{"period_start": "2026-09-28", "jobs": 4, "rejected": 2, "rate": 0.5}],
}


def _as(reports: FakeReports, role: str) -> dict[str, str]:
    """Headers of a key of tenant A whose user has `role`."""
    api_key = f"key-of-a-{role}"
    reports.keys[api_key] = (TENANT_A, f"key-a-{role}", role)
    return {"Authorization": f"Bearer {api_key}"}


@pytest.mark.parametrize("role", ["clinician", "integrator"])
async def test_only_admins_read_monitoring(
    client: httpx.AsyncClient, reports: FakeReports, reports_api: respx.MockRouter, role: str
) -> None:
    route = reports_api.get(MONITORING).respond(200, json=FIGURES)

    response = await client.get("/v1/monitoring", headers=_as(reports, role))

    assert response.status_code == 403
    assert error_code(response) == "auth.forbidden"
    assert response.json()["error"]["details"] == {"role": role, "allowed_roles": ["admin"]}
    assert not route.called


async def test_an_admin_gets_reports_figures_for_their_tenant_and_window(
    client: httpx.AsyncClient, reports: FakeReports, reports_api: respx.MockRouter
) -> None:
    route = reports_api.get(MONITORING).respond(200, json=FIGURES)

    response = await client.get(
        "/v1/monitoring",
        params={"since": "2026-10-01T00:00:00Z", "until": "2026-11-01T02:00:00+02:00", "bucket": "day"},
        headers=_as(reports, "admin"),
    )

    assert response.status_code == 200
    assert response.json() == FIGURES
    sent = route.calls.last.request
    assert sent.headers["X-Tenant-Id"] == TENANT_A
    assert dict(sent.url.params) == {
        "since": "2026-10-01T00:00:00+00:00",
        "until": "2026-11-01T02:00:00+02:00",
        "bucket": "day",
    }
    # reports audits the read as this user.
    actor = Actor.from_header(sent.headers[ACTOR_HEADER])
    assert actor is not None
    assert (actor.user_id, actor.role.value, actor.key_id) == ("usr-key-a-admin", "admin", "key-a-admin")


async def test_the_window_defaults_are_left_to_reports(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    route = reports_api.get(MONITORING).respond(200, json=FIGURES)

    response = await client.get("/v1/monitoring")  # tenant A's default key is an admin's

    assert response.status_code == 200
    assert dict(route.calls.last.request.url.params) == {"bucket": "week"}


@pytest.mark.parametrize("params", [{"bucket": "month"}, {"since": "1700000000"}, {"until": "yesterday"}])
async def test_a_bad_parameter_is_refused_before_reports_is_asked(
    client: httpx.AsyncClient, reports_api: respx.MockRouter, params: dict[str, str]
) -> None:
    route = reports_api.get(MONITORING).respond(200, json=FIGURES)

    response = await client.get("/v1/monitoring", params=params)

    assert response.status_code == 422
    assert error_code(response) == "request.invalid"
    assert not route.called


async def test_reports_refusal_of_the_window_is_passed_through(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    refusal = {"error": {"code": "request.invalid", "message": "`since` must be before `until`"}}
    reports_api.get(MONITORING).respond(422, json=refusal)

    response = await client.get(
        "/v1/monitoring", params={"since": "2026-11-02T00:00:00Z", "until": "2026-11-01T00:00:00Z"}
    )

    assert response.status_code == 422
    assert error_code(response) == "request.invalid"


async def test_a_body_breaking_the_contract_is_upstream_invalid_response(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    reports_api.get(MONITORING).respond(200, json={**FIGURES, "models": [{"results": -1}]})

    response = await client.get("/v1/monitoring")

    assert response.status_code == 502
    assert error_code(response) == "upstream.invalid_response"


async def test_the_route_is_documented_with_its_role_refusal(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json", headers={"Authorization": ""})

    operation = response.json()["paths"]["/v1/monitoring"]["get"]
    assert operation["summary"]
    assert {"403", "422"} <= set(operation["responses"])
    assert {p["name"] for p in operation["parameters"]} == {"since", "until", "bucket"}
