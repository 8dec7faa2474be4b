"""The reviews and next-steps routes as the gateway serves them: only a clinician signs off and only
an admin changes the next steps (403 `auth.forbidden` before reports is asked), reads are open to
every role, the caller's tenant and acting user travel to reports, reports' codes pass through, and
the worklist's `sort` and `review_state` reach the list."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from contracts.users import ACTOR_HEADER, Actor
from tests.gateway.conftest import error_code
from tests.gateway.fakes import TENANT_A, FakeReports

CLINICIAN_KEY, INTEGRATOR_KEY, ADMIN_KEY = "key-clinician", "key-integrator", "key-admin"
REVIEW = {
    "review_id": "rev_1",
    "job_id": "job-1",
    "version": 1,
    "reviewer": {"user_id": "usr-key-c", "name": "user of key-c"},
    "triage_level": "routine",
    "model_triage_level": "urgent",
    "agrees_with_model": False,
    "working_diagnosis": {"code": "nv", "text": None, "display_name": "Melanocytic nevi"},
    "note": None,
    "confirmed_diagnosis": None,
    "created_at": "2026-12-01T08:00:00Z",
}
STEPS = {"urgent": "Same week.", "routine": "Next clinic.", "monitor": "Six months.", "source": "tenant"}


@pytest.fixture(autouse=True)
def roles(reports: FakeReports) -> None:
    """One key per role in tenant A."""
    reports.keys[CLINICIAN_KEY] = (TENANT_A, "key-c", "clinician")
    reports.keys[INTEGRATOR_KEY] = (TENANT_A, "key-i", "integrator")
    reports.keys[ADMIN_KEY] = (TENANT_A, "key-adm", "admin")


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_clinician_signs_off_through_reports_as_themselves(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    route = reports_api.post("/internal/v1/jobs/job-1/reviews").respond(201, json=REVIEW)

    response = await client.post(
        "/v1/jobs/job-1/reviews",
        json={"triage_level": "routine", "working_diagnosis": {"code": "nv"}, "expected_version": 0},
        headers=as_key(CLINICIAN_KEY),
    )

    assert response.status_code == 201, response.text
    assert response.json() == REVIEW
    sent = route.calls.last.request
    assert sent.headers["X-Tenant-Id"] == TENANT_A
    actor = Actor.from_header(sent.headers[ACTOR_HEADER])
    assert actor is not None and actor.role == "clinician" and actor.user_id == "usr-key-c"
    assert json.loads(sent.content)["expected_version"] == 0


@pytest.mark.parametrize("key", [INTEGRATOR_KEY, ADMIN_KEY])
async def test_integrators_and_admins_may_not_sign_off(
    client: httpx.AsyncClient, reports_api: respx.MockRouter, key: str
) -> None:
    route = reports_api.post("/internal/v1/jobs/job-1/reviews").respond(201, json=REVIEW)

    response = await client.post(
        "/v1/jobs/job-1/reviews", json={"triage_level": "urgent"}, headers=as_key(key)
    )

    assert response.status_code == 403
    assert error_code(response) == "auth.forbidden"
    assert response.json()["error"]["details"]["allowed_roles"] == ["clinician"]
    assert not route.called


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (409, "review.conflict"),
        (409, "review.not_reviewable"),
        (422, "review.unknown_class"),
        (422, "review.malignancy_unknown"),
        (404, "job.not_found"),
    ],
)
async def test_reports_refusals_pass_through_with_their_codes(
    client: httpx.AsyncClient, reports_api: respx.MockRouter, status: int, code: str
) -> None:
    reports_api.post("/internal/v1/jobs/job-1/reviews").respond(
        status, json={"error": {"code": code, "message": code, "details": {}}}
    )

    response = await client.post(
        "/v1/jobs/job-1/reviews", json={"triage_level": "urgent"}, headers=as_key(CLINICIAN_KEY)
    )

    assert response.status_code == status
    assert error_code(response) == code


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"triage_level": "asap"},
        {"triage_level": "urgent", "working_diagnosis": {}},
        {"triage_level": "urgent", "note": "n" * 2001},
    ],
)
async def test_an_invalid_review_is_refused_before_reports_is_asked(
    client: httpx.AsyncClient, reports_api: respx.MockRouter, body: dict[str, object]
) -> None:
    route = reports_api.post("/internal/v1/jobs/job-1/reviews").respond(201, json=REVIEW)

    response = await client.post("/v1/jobs/job-1/reviews", json=body, headers=as_key(CLINICIAN_KEY))

    assert response.status_code == 422
    assert error_code(response) == "request.invalid"
    assert not route.called


@pytest.mark.parametrize("key", [CLINICIAN_KEY, INTEGRATOR_KEY, ADMIN_KEY])
async def test_every_role_reads_a_jobs_reviews_and_the_next_steps(
    client: httpx.AsyncClient, reports_api: respx.MockRouter, key: str
) -> None:
    reports_api.get("/internal/v1/jobs/job-1/reviews").respond(200, json={"items": [REVIEW]})
    reports_api.get("/internal/v1/next-steps").respond(200, json=STEPS)

    reviews = await client.get("/v1/jobs/job-1/reviews", headers=as_key(key))
    steps = await client.get("/v1/next-steps", headers=as_key(key))

    assert reviews.status_code == 200 and reviews.json() == {"items": [REVIEW]}
    assert steps.status_code == 200 and steps.json() == STEPS


async def test_an_admin_sets_the_next_steps(client: httpx.AsyncClient, reports_api: respx.MockRouter) -> None:
    route = reports_api.put("/internal/v1/next-steps").respond(200, json=STEPS)
    body = {key: STEPS[key] for key in ("urgent", "routine", "monitor")}

    response = await client.put("/v1/next-steps", json=body, headers=as_key(ADMIN_KEY))

    assert response.status_code == 200
    assert response.json() == STEPS
    actor = Actor.from_header(route.calls.last.request.headers[ACTOR_HEADER])
    assert actor is not None and actor.role == "admin"


@pytest.mark.parametrize("key", [CLINICIAN_KEY, INTEGRATOR_KEY])
async def test_only_an_admin_sets_the_next_steps(
    client: httpx.AsyncClient, reports_api: respx.MockRouter, key: str
) -> None:
    route = reports_api.put("/internal/v1/next-steps").respond(200, json=STEPS)

    response = await client.put(
        "/v1/next-steps", json={"urgent": "a", "routine": "b", "monitor": "c"}, headers=as_key(key)
    )

    assert response.status_code == 403 and error_code(response) == "auth.forbidden"
    assert not route.called


async def test_the_worklist_order_and_review_state_reach_reports(
    client: httpx.AsyncClient, reports_api: respx.MockRouter
) -> None:
    response = await client.get(
        "/v1/reports",
        params={"sort": "priority", "review_state": "unreviewed"},
        headers=as_key(CLINICIAN_KEY),
    )

    assert response.status_code == 200
    sent = reports_api["list_reports"].calls.last.request
    assert sent.url.params["sort"] == "priority"
    assert sent.url.params["review_state"] == "unreviewed"


@pytest.mark.parametrize("params", [{"sort": "oldest"}, {"review_state": "done"}])
async def test_an_unknown_order_or_review_state_is_refused(
    client: httpx.AsyncClient, reports_api: respx.MockRouter, params: dict[str, str]
) -> None:
    response = await client.get("/v1/reports", params=params)

    assert response.status_code == 422 and error_code(response) == "request.invalid"
    assert not reports_api["list_reports"].called
