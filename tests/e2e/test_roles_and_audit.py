"""Issue 12's users, roles and audit trail end to end, through the public gateway of a real fleet
(PostgreSQL + Redis, and the embedded default): an admin makes a clinician and an integrator and
their keys; each role is refused what is not theirs; a clinician's reads land in the audit trail
the admin reads; revoked keys and disabled users are refused at once by the gateway that was told,
even with a long key cache; another tenant's users are not found; no route edits the trail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.fleet_runner import Fleet
from tests.e2e.fleet import EMBEDDED, PRODUCTION, TENANTS, backends
from tests.e2e.gateway_calls import bearer, error_code, new_user_with_key, submit_image

pytestmark = pytest.mark.e2e

USER_AGENT = "skintriage-e2e-dashboard/1.0"


@dataclass(frozen=True)
class People:
    """Tenant A's admin (the CLI's key), and the clinician and integrator it made, with keys."""

    gateway: httpx.Client
    admin_key: str
    other_tenant_admin_key: str
    clinician: dict[str, Any]
    clinician_key: str
    integrator: dict[str, Any]
    integrator_key: str


def _made(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module", params=[PRODUCTION, EMBEDDED])
def fleet(
    request: pytest.FixtureRequest, tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """A fleet whose gateway caches keys for a minute: only forgetting refuses a cached key at once."""
    workdir = tmp_path_factory.mktemp(f"people-{request.param}")
    with (
        backends(request.param, workdir) as chosen,
        Fleet(
            chosen, tiny_bundle_dir, workdir, TENANTS, extra_env={"GATEWAY_AUTH_CACHE_SECONDS": "60"}
        ) as started,
    ):
        yield started
        started.check_alive()


@pytest.fixture(scope="module")
def people(fleet: Fleet) -> Iterator[People]:
    with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as gateway:
        admin_key = fleet.api_keys[TENANTS[0]]
        clinician, clinician_key = new_user_with_key(gateway, admin_key, "Dr Ana Chen", "clinician")
        integrator, integrator_key = new_user_with_key(gateway, admin_key, "EHR bridge", "integrator")
        yield People(
            gateway,
            admin_key,
            fleet.api_keys[TENANTS[1]],
            clinician,
            clinician_key,
            integrator,
            integrator_key,
        )


def test_me_names_each_keys_user_and_role(people: People) -> None:
    for key, name, role in (
        (people.clinician_key, "Dr Ana Chen", "clinician"),
        (people.integrator_key, "EHR bridge", "integrator"),
        (people.admin_key, "admin", "admin"),
    ):
        me = people.gateway.get("/v1/me", headers=bearer(key))
        assert me.status_code == 200, me.text
        assert (me.json()["name"], me.json()["role"]) == (name, role)
    users = people.gateway.get("/v1/users", headers=bearer(people.admin_key)).json()["items"]
    assert [user["name"] for user in users] == ["admin", "Dr Ana Chen", "EHR bridge"]


def test_clinicians_and_integrators_are_refused_what_is_an_admins(people: People) -> None:
    refused = [
        (people.clinician_key, "GET", "/v1/users"),
        (people.clinician_key, "GET", "/v1/api-keys"),
        (people.clinician_key, "GET", "/v1/audit"),
        (people.clinician_key, "GET", "/v1/webhooks"),
        (people.integrator_key, "GET", "/v1/audit"),
        (people.integrator_key, "GET", "/v1/users"),
        (people.integrator_key, "POST", f"/v1/users/{people.clinician['user_id']}/disable"),
    ]
    for key, method, path in refused:
        response = people.gateway.request(method, path, headers=bearer(key))
        assert response.status_code == 403, (method, path, response.text)
        assert error_code(response) == "auth.forbidden"
    assert people.gateway.get("/v1/webhooks", headers=bearer(people.integrator_key)).status_code == 200


def test_a_clinicians_reads_are_in_the_admins_audit_trail(people: People, ham_images: list[Path]) -> None:
    gateway, key = people.gateway, people.clinician_key
    submitted = submit_image(gateway, key, ham_images[0].name, ham_images[0].read_bytes(), Prefer="wait=30")
    assert submitted.status_code == 200 and submitted.json()["status"] == "done", submitted.text
    job_id = submitted.json()["job_id"]
    reads = {"report.read": "", "image.read": "/image", "heatmap.read": "/heatmap.png"}
    for action, suffix in reads.items():
        headers = bearer(key, **{"X-Request-ID": f"e2e-{action}-{job_id}", "User-Agent": USER_AGENT})
        assert gateway.get(f"/v1/jobs/{job_id}{suffix}", headers=headers).status_code == 200

    audit = gateway.get(
        "/v1/audit",
        params={"user_id": people.clinician["user_id"], "resource_id": job_id, "limit": 200},
        headers=bearer(people.admin_key),
    )
    assert audit.status_code == 200, audit.text
    by_request = {entry["request_id"]: entry for entry in audit.json()["items"]}
    for action in reads:
        entry = by_request[f"e2e-{action}-{job_id}"]
        assert entry["action"] == action
        assert (entry["resource_type"], entry["resource_id"]) == ("job", job_id)
        assert (entry["user_id"], entry["user_name"], entry["role"]) == (
            people.clinician["user_id"],
            "Dr Ana Chen",
            "clinician",
        )
        assert entry["client_ip"] == "127.0.0.1" and entry["user_agent"] == USER_AGENT
        assert entry["key_id"] and entry["at"]
    only_heatmaps = gateway.get(
        "/v1/audit", params={"action": "heatmap.read"}, headers=bearer(people.admin_key)
    ).json()["items"]
    assert {entry["action"] for entry in only_heatmaps} == {"heatmap.read"}


def test_a_revoked_key_is_refused_at_once_by_the_gateway_that_revoked_it(people: People) -> None:
    gateway = people.gateway
    spare = _made(
        gateway.post(
            f"/v1/users/{people.clinician['user_id']}/api-keys",
            json={"expires_in_days": 7},
            headers=bearer(people.admin_key),
        )
    )
    assert gateway.get("/v1/me", headers=bearer(spare["api_key"])).status_code == 200  # cached for 60 s
    assert (
        gateway.delete(f"/v1/api-keys/{spare['key_id']}", headers=bearer(people.admin_key)).status_code == 204
    )
    refused = gateway.get("/v1/me", headers=bearer(spare["api_key"]))
    assert (refused.status_code, error_code(refused)) == (401, "auth.invalid_api_key")
    keys = gateway.get("/v1/api-keys", headers=bearer(people.admin_key)).json()["items"]
    (listed,) = [item for item in keys if item["key_id"] == spare["key_id"]]
    assert listed["revoked_at"] is not None and listed["user_name"] == "Dr Ana Chen"
    assert gateway.get("/v1/me", headers=bearer(people.clinician_key)).status_code == 200


def test_a_disabled_users_key_is_refused_and_an_admin_cannot_disable_themselves(people: People) -> None:
    gateway = people.gateway
    leaver, leaver_key = new_user_with_key(gateway, people.admin_key, "Dr Leaving", "clinician")
    assert gateway.get("/v1/me", headers=bearer(leaver_key)).status_code == 200
    disabled = gateway.post(f"/v1/users/{leaver['user_id']}/disable", headers=bearer(people.admin_key))
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    assert gateway.get("/v1/me", headers=bearer(leaver_key)).status_code == 401

    me = gateway.get("/v1/me", headers=bearer(people.admin_key)).json()
    myself = gateway.post(f"/v1/users/{me['user_id']}/disable", headers=bearer(people.admin_key))
    assert (myself.status_code, error_code(myself)) == (409, "user.self")
    my_key = gateway.delete(f"/v1/api-keys/{me['key_id']}", headers=bearer(people.admin_key))
    assert (my_key.status_code, error_code(my_key)) == (409, "api_key.self")
    changes = gateway.get(
        "/v1/audit",
        params={"resource_type": "user", "resource_id": leaver["user_id"]},
        headers=bearer(people.admin_key),
    ).json()["items"]
    assert [entry["action"] for entry in changes] == ["user.disable", "user.create"]


def test_another_tenants_user_is_not_found(people: People) -> None:
    outsider = bearer(people.other_tenant_admin_key)
    clinician_id = people.clinician["user_id"]
    for response in (
        people.gateway.post(f"/v1/users/{clinician_id}/disable", headers=outsider),
        people.gateway.post(f"/v1/users/{clinician_id}/api-keys", json={}, headers=outsider),
    ):
        assert (response.status_code, error_code(response)) == (404, "user.not_found")
    theirs = people.gateway.get("/v1/audit", headers=outsider).json()["items"]
    assert all(entry["user_id"] != clinician_id for entry in theirs)
    assert people.gateway.get("/v1/me", headers=bearer(people.clinician_key)).status_code == 200


def test_no_route_changes_or_deletes_an_audit_entry(people: People) -> None:
    newest = people.gateway.get("/v1/audit", params={"limit": 1}, headers=bearer(people.admin_key)).json()
    event_id = newest["items"][0]["event_id"]
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        for path in ("/v1/audit", f"/v1/audit/{event_id}"):
            response = people.gateway.request(method, path, json={}, headers=bearer(people.admin_key))
            assert response.status_code in (404, 405), (method, path, response.status_code)
