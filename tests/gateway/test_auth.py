"""Bearer API keys, verified by reports and cached briefly."""

from __future__ import annotations

import asyncio

import httpx
import respx

from contracts.users import Role
from services.gateway.api.app import create_app
from services.gateway.config import Settings
from services.gateway.domain.auth import ApiKeyCache, Principal
from tests.gateway.conftest import error_code, make_settings
from tests.gateway.fakes import KEY_A, FakeReports, InMemoryPublisher


async def test_request_without_authorization_is_refused_with_missing_api_key(client: httpx.AsyncClient):
    response = await client.get("/v1/jobs/abc", headers={"Authorization": ""})

    assert response.status_code == 401
    assert error_code(response) == "auth.missing_api_key"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_non_bearer_authorization_is_refused_with_missing_api_key(client):
    response = await client.get("/v1/jobs/abc", headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert response.status_code == 401
    assert error_code(response) == "auth.missing_api_key"


async def test_unknown_api_key_is_refused_with_invalid_api_key(client):
    response = await client.get("/v1/jobs/abc", headers={"Authorization": "Bearer not-a-key"})

    assert response.status_code == 401
    assert error_code(response) == "auth.invalid_api_key"


async def test_overlong_api_key_is_refused_without_asking_reports(client, reports_api: respx.MockRouter):
    response = await client.get("/v1/jobs/abc", headers={"Authorization": "Bearer " + "k" * 300})

    assert error_code(response) == "auth.invalid_api_key"
    assert not any(call.request.url.path.endswith("/auth/verify") for call in reports_api.calls)


async def test_upload_without_api_key_queues_nothing(client, publisher):
    response = await client.post(
        "/v1/images", files={"file": ("a.jpg", b"\xff\xd8\xff")}, headers={"Authorization": ""}
    )

    assert error_code(response) == "auth.missing_api_key"
    assert publisher.tasks == []


async def test_verified_key_is_cached_so_reports_is_asked_once(client, reports, reports_api):
    reports.add_job("tenant-a", "job1")

    for _ in range(3):
        assert (await client.get("/v1/jobs/job1")).status_code == 200

    verifications = [c for c in reports_api.calls if c.request.url.path == "/internal/v1/auth/verify"]
    assert len(verifications) == 1


async def test_verification_sends_internal_token_and_request_id(client, reports_api: respx.MockRouter):
    response = await client.get("/v1/jobs/abc", headers={"X-Request-ID": "req-123"})

    verify = next(c for c in reports_api.calls if c.request.url.path == "/internal/v1/auth/verify")
    assert verify.request.headers["X-Request-ID"] == "req-123"
    assert verify.request.headers["X-Internal-Token"]
    assert response.headers["X-Request-ID"] == "req-123"


async def test_rejected_internal_token_is_not_blamed_on_the_callers_key(client, reports_api):
    reports_api["verify"].mock(
        return_value=httpx.Response(
            401, json={"error": {"code": "auth.internal_token_invalid", "message": "bad token"}}
        )
    )

    response = await client.get("/v1/jobs/abc", headers={"Authorization": f"Bearer {KEY_A}"})

    assert response.status_code == 503
    assert error_code(response) == "upstream.unavailable"


def test_cache_entry_expires_after_its_ttl():
    now = [0.0]
    cache = ApiKeyCache(ttl_seconds=30, max_entries=10, clock=lambda: now[0])
    cache.put("k", Principal("t", "id", "u", "user", Role.admin))

    now[0] = 29.9
    assert cache.get("k") == Principal("t", "id", "u", "user", Role.admin)
    now[0] = 30.0
    assert cache.get("k") is None


def test_cache_drops_the_oldest_entry_when_full():
    cache = ApiKeyCache(ttl_seconds=30, max_entries=2)
    for key in ("a", "b", "c"):
        cache.put(key, Principal("t", key, "u", "user", Role.admin))

    assert cache.get("a") is None
    assert cache.get("c") == Principal("t", "c", "u", "user", Role.admin)


def test_cache_never_holds_the_key_itself():
    cache = ApiKeyCache(ttl_seconds=30, max_entries=2)
    cache.put("super-secret-key", Principal("t", "id", "u", "user", Role.admin))

    assert "super-secret-key" not in repr(vars(cache))


async def test_a_revoked_key_stops_working_within_a_second_with_the_default_cache(
    publisher: InMemoryPublisher, reports: FakeReports
) -> None:
    settings = make_settings(auth_cache_seconds=Settings.model_fields["auth_cache_seconds"].default)
    app = create_app(settings, publisher=publisher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {KEY_A}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as http:
            assert (await http.get("/v1/reports")).status_code == 200
            del reports.keys[KEY_A]  # revoked in reports
            await asyncio.sleep(1.05)
            refused = await http.get("/v1/reports")

    assert refused.status_code == 401
    assert error_code(refused) == "auth.invalid_api_key"
