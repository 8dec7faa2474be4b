"""Issue 12's people routes at the gateway: who may call them (403 `auth.forbidden` for the other
roles, before reports is asked), `GET /v1/me`, the audit query passed to reports as given, reports'
codes passed through, and the key cache forgetting a revoked key or a disabled user's keys at once.
Reports is the respx fake (tests/gateway/fakes.py); the people routes' answers are mocked here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from contracts.users import Role
from services.gateway.api.app import create_app
from services.gateway.domain.auth import ApiKeyCache, Principal
from tests.gateway.conftest import error_code, make_settings
from tests.gateway.fakes import KEY_A, TENANT_A, FakeReports, InMemoryPublisher

KEY_CLINICIAN, KEY_INTEGRATOR = "key-of-a-clinician", "key-of-an-integrator"
USER = {
    "user_id": "usr-key-c",
    "name": "user of key-c",
    "role": "clinician",
    "created_at": "2026-12-01T08:00:00Z",
    "disabled_at": None,
}
EMPTY_AUDIT: dict[str, Any] = {"items": [], "next_cursor": None}
# api key -> (tenant, key id, role), as the fake reports answers them
KEYS = {
    KEY_A: (TENANT_A, "key-a", "admin"),
    KEY_CLINICIAN: (TENANT_A, "key-c", "clinician"),
    KEY_INTEGRATOR: (TENANT_A, "key-i", "integrator"),
}

# (method, path, body) of every admin-only route.
ADMIN_ROUTES = [
    ("GET", "/v1/users", None),
    ("POST", "/v1/users", {"name": "Dr Chen", "role": "clinician"}),
    ("POST", "/v1/users/usr-1/disable", None),
    ("POST", "/v1/users/usr-1/api-keys", {"expires_in_days": None}),
    ("GET", "/v1/api-keys", None),
    ("DELETE", "/v1/api-keys/key-1", None),
    ("GET", "/v1/audit", None),
]
# (method, path, body) of the integration management routes (integrator or admin).
INTEGRATION_ROUTES = [
    ("POST", "/v1/webhooks", {"url": "https://ehr.example/hook", "events": ["job.finished"]}),
    ("GET", "/v1/webhooks", None),
    ("DELETE", "/v1/webhooks/wh-1", None),
    ("POST", "/v1/webhooks/wh-1/rotate-secret", None),
    ("GET", "/v1/webhooks/wh-1/deliveries", None),
    ("PUT", "/v1/fhir-endpoint", {"base_url": "https://e.example/fhir", "token_url": "https://e.example/t",
                                  "client_id": "c"}),
    ("GET", "/v1/fhir-endpoint", None),
    ("DELETE", "/v1/fhir-endpoint", None),
    ("POST", "/v1/deliveries/dlv-1/replay", None),
]  # fmt: skip


@pytest.fixture
def roles(reports: FakeReports) -> FakeReports:
    """Tenant A's clinician and integrator keys beside its admin key (KEY_A)."""
    reports.keys[KEY_CLINICIAN] = (TENANT_A, "key-c", "clinician")
    reports.keys[KEY_INTEGRATOR] = (TENANT_A, "key-i", "integrator")
    return reports


@pytest.fixture
async def gateway(publisher: InMemoryPublisher, roles: FakeReports) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a long key cache, so that only forgetting can refuse a cached key."""
    app = create_app(make_settings(auth_cache_seconds=60), publisher=publisher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _call(http: httpx.AsyncClient, key: str, method: str, path: str, body: Any) -> httpx.Response:
    return await http.request(method, path, json=body, headers=_as(key))


@pytest.mark.parametrize("key", [KEY_A, KEY_CLINICIAN, KEY_INTEGRATOR])
async def test_me_is_the_keys_user_role_tenant_and_key(gateway: httpx.AsyncClient, key: str) -> None:
    response = await gateway.get("/v1/me", headers=_as(key))
    assert response.status_code == 200
    me = response.json()
    tenant, key_id, role = KEYS[key]
    assert me == {
        "user_id": f"usr-{key_id}",
        "name": f"user of {key_id}",
        "role": role,
        "tenant_id": tenant,
        "key_id": key_id,
    }


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize("key", [KEY_CLINICIAN, KEY_INTEGRATOR])
async def test_users_keys_and_the_audit_trail_are_an_admins(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter, key: str, method: str, path: str, body: Any
) -> None:
    people = reports_api.route(path__regex=r"^/internal/v1/(users|api-keys|audit)")
    response = await _call(gateway, key, method, path, body)
    assert response.status_code == 403
    assert error_code(response) == "auth.forbidden"
    assert response.json()["error"]["details"]["allowed_roles"] == ["admin"]
    assert not people.called


@pytest.mark.parametrize(("method", "path", "body"), INTEGRATION_ROUTES)
async def test_a_clinician_cannot_manage_integrations(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter, method: str, path: str, body: Any
) -> None:
    upstream = reports_api.route(path__regex=r"^/internal/v1/(webhooks|fhir-endpoint|deliveries)")
    response = await _call(gateway, KEY_CLINICIAN, method, path, body)
    assert response.status_code == 403
    assert error_code(response) == "auth.forbidden"
    assert not upstream.called


@pytest.mark.parametrize("key", [KEY_INTEGRATOR, KEY_A])
async def test_integrators_and_admins_manage_integrations(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter, key: str
) -> None:
    reports_api.get("/internal/v1/webhooks").mock(return_value=httpx.Response(200, json={"items": []}))
    response = await gateway.get("/v1/webhooks", headers=_as(key))
    assert response.status_code == 200
    assert response.json() == {"items": []}


async def test_every_role_reads_a_jobs_deliveries(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    reports_api.get("/internal/v1/jobs/job-1/deliveries").mock(
        return_value=httpx.Response(200, json={"items": []})
    )
    for key in (KEY_CLINICIAN, KEY_INTEGRATOR, KEY_A):
        assert (await gateway.get("/v1/jobs/job-1/deliveries", headers=_as(key))).status_code == 200


async def test_the_audit_query_reaches_reports_as_given(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    audit = reports_api.get("/internal/v1/audit").mock(return_value=httpx.Response(200, json=EMPTY_AUDIT))
    params = {"user_id": "usr-1", "action": "report.read", "resource_type": "job", "resource_id": "job-1",
              "since": "2026-12-01T00:00:00Z", "limit": "10", "cursor": "abc"}  # fmt: skip
    response = await gateway.get("/v1/audit", params=params, headers=_as(KEY_A))
    assert response.status_code == 200 and response.json() == EMPTY_AUDIT
    sent = dict(audit.calls.last.request.url.params)
    assert sent == {**params, "since": "2026-12-01T00:00:00+00:00"}
    assert audit.calls.last.request.headers["X-Tenant-Id"] == TENANT_A


@pytest.mark.parametrize(
    "params", [{"action": "report.delete"}, {"limit": "0"}, {"limit": "201"}, {"since": "17"}]
)
async def test_a_bad_audit_query_is_refused_before_reports(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter, params: dict[str, str]
) -> None:
    audit = reports_api.get("/internal/v1/audit")
    response = await gateway.get("/v1/audit", params=params, headers=_as(KEY_A))
    assert response.status_code == 422
    assert error_code(response) == "request.invalid"
    assert not audit.called


async def test_reports_codes_pass_through(gateway: httpx.AsyncClient, reports_api: respx.MockRouter) -> None:
    reports_api.post("/internal/v1/users").mock(
        return_value=httpx.Response(409, json={"error": {"code": "user.exists", "message": "taken"}})
    )
    reports_api.post("/internal/v1/users/usr-other/disable").mock(
        return_value=httpx.Response(404, json={"error": {"code": "user.not_found", "message": "no"}})
    )
    taken = await gateway.post("/v1/users", json={"name": "Dr Chen", "role": "clinician"}, headers=_as(KEY_A))
    assert (taken.status_code, error_code(taken)) == (409, "user.exists")
    missing = await gateway.post("/v1/users/usr-other/disable", headers=_as(KEY_A))
    assert (missing.status_code, error_code(missing)) == (404, "user.not_found")


async def test_a_user_body_is_checked_before_reports(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    users = reports_api.post("/internal/v1/users")
    for body in (
        {"name": "", "role": "clinician"},
        {"name": "Bo", "role": "owner"},
        {"name": "a\x00b", "role": "admin"},
    ):
        response = await gateway.post("/v1/users", json=body, headers=_as(KEY_A))
        assert response.status_code == 422, body
    assert not users.called


async def test_a_key_revoked_through_this_gateway_is_refused_at_once(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter, roles: FakeReports
) -> None:
    def revoke(request: httpx.Request) -> httpx.Response:
        del roles.keys[KEY_CLINICIAN]
        return httpx.Response(204)

    reports_api.delete("/internal/v1/api-keys/key-c").mock(side_effect=revoke)
    assert (await gateway.get("/v1/me", headers=_as(KEY_CLINICIAN))).status_code == 200  # cached now
    assert (await gateway.delete("/v1/api-keys/key-c", headers=_as(KEY_A))).status_code == 204
    refused = await gateway.get("/v1/me", headers=_as(KEY_CLINICIAN))
    assert (refused.status_code, error_code(refused)) == (401, "auth.invalid_api_key")
    assert (await gateway.get("/v1/me", headers=_as(KEY_A))).status_code == 200


async def test_a_user_disabled_through_this_gateway_is_refused_at_once(
    gateway: httpx.AsyncClient, reports_api: respx.MockRouter, roles: FakeReports
) -> None:
    def disable(request: httpx.Request) -> httpx.Response:
        del roles.keys[KEY_CLINICIAN]  # reports refuses a disabled user's keys
        return httpx.Response(200, json={**USER, "disabled_at": "2026-12-01T09:00:00Z"})

    reports_api.post("/internal/v1/users/usr-key-c/disable").mock(side_effect=disable)
    assert (await gateway.get("/v1/me", headers=_as(KEY_CLINICIAN))).status_code == 200
    # Without forgetting, the cache would keep the key for its 60 s.
    assert (await gateway.get("/v1/me", headers=_as(KEY_CLINICIAN))).status_code == 200
    assert (await gateway.post("/v1/users/usr-key-c/disable", headers=_as(KEY_A))).status_code == 200
    assert (await gateway.get("/v1/me", headers=_as(KEY_CLINICIAN))).status_code == 401


def test_the_cache_forgets_by_key_id_and_by_user_id_only_what_matches() -> None:
    cache = ApiKeyCache(ttl_seconds=30, max_entries=10)
    cache.put("k1", Principal("t", "key-1", "usr-1", "Ann", Role.clinician))
    cache.put("k2", Principal("t", "key-2", "usr-1", "Ann", Role.clinician))
    cache.put("k3", Principal("t", "key-3", "usr-2", "Bo", Role.admin))
    cache.forget_key("key-1")
    assert (cache.get("k1"), cache.get("k2") is not None) == (None, True)
    cache.forget_user("usr-1")
    assert cache.get("k2") is None and cache.get("k3") is not None
