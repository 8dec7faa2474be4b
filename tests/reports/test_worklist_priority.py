"""The priority worklist (`sort=priority`) and the review-state filter of the report list (both
backends): unreviewed urgent results first, then the other results awaiting review, then the rest,
the longest-waiting first in each group, across pages; and a page costs the same few queries
however many of its rows were reviewed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from services.reports.db.models import Job
from tests.reports.factories import job_body, tenant_headers
from tests.reports.test_reviews import actor_headers, finish

LIST = "/internal/v1/reports"
BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _queued(client: TestClient, tenant: str, job_id: str) -> None:
    body = job_body(tenant, job_id=job_id)
    assert client.post("/internal/v1/jobs", json=body, headers=tenant_headers(tenant)).status_code == 201


def _age(db: Session, order: list[str]) -> None:
    """Creation times in the given order, a minute apart (the first is the oldest)."""
    for minutes, job_id in enumerate(order):
        db.execute(update(Job).where(Job.id == job_id).values(created_at=BASE + timedelta(minutes=minutes)))
    db.commit()


def _page(client: TestClient, tenant: str, **params: Any) -> dict[str, Any]:
    response = client.get(LIST, params=params, headers=tenant_headers(tenant))
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _ids(client: TestClient, tenant: str, **params: Any) -> list[str]:
    return [item["job_id"] for item in _page(client, tenant, **params)["items"]]


@pytest.fixture
def worklist(client: TestClient, db: Session, tenant: str) -> list[str]:
    """A tenant's jobs in every worklist situation; returns the expected priority order."""
    finish(client, tenant, "urgent_old")
    finish(client, tenant, "urgent_new")
    finish(client, tenant, "routine_old", triage_level="routine")
    finish(client, tenant, "monitor_new", triage_level="monitor")
    finish(client, tenant, "urgent_signed")
    finish(client, tenant, "routine_confirmed", triage_level="routine")
    finish(client, tenant, "rejected", status="rejected")
    _queued(client, tenant, "queued")
    clinician = actor_headers(db, tenant)
    signed = client.post(
        "/internal/v1/jobs/urgent_signed/reviews", json={"triage_level": "urgent"}, headers=clinician
    )
    assert signed.status_code == 201
    confirmed = client.post(
        "/internal/v1/jobs/routine_confirmed/reviews",
        json={"triage_level": "routine", "confirmed_diagnosis": {"code": "nv", "basis": "follow_up"}},
        headers=clinician,
    )
    assert confirmed.status_code == 201
    # Oldest first: the reviewed, rejected and queued jobs are older than some awaiting review, so
    # only the grouping can put them last.
    _age(
        db,
        [
            "urgent_signed",
            "rejected",
            "routine_old",
            "urgent_old",
            "queued",
            "routine_confirmed",
            "urgent_new",
            "monitor_new",
        ],
    )
    return [
        "urgent_old",
        "urgent_new",
        "routine_old",
        "monitor_new",
        "urgent_signed",
        "rejected",
        "queued",
        "routine_confirmed",
    ]


def test_priority_puts_unreviewed_urgent_first_then_unreviewed_then_the_rest_oldest_first(
    client: TestClient, tenant: str, worklist: list[str]
) -> None:
    assert _ids(client, tenant, sort="priority") == worklist


def test_newest_stays_the_default_order(client: TestClient, tenant: str, worklist: list[str]) -> None:
    newest = _ids(client, tenant)

    assert newest == _ids(client, tenant, sort="newest")
    assert newest[0] == "monitor_new" and newest[-1] == "urgent_signed"


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_priority_pages_visit_every_job_once_in_order(
    client: TestClient, tenant: str, worklist: list[str], limit: int
) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = _page(client, tenant, sort="priority", limit=limit, **({"cursor": cursor} if cursor else {}))
        seen += [item["job_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == worklist


def test_a_review_moves_a_job_out_of_the_urgent_group(
    client: TestClient, db: Session, tenant: str, worklist: list[str]
) -> None:
    answer = client.post(
        "/internal/v1/jobs/urgent_old/reviews",
        json={"triage_level": "urgent"},
        headers=actor_headers(db, tenant),
    )
    assert answer.status_code == 201

    order = _ids(client, tenant, sort="priority")

    assert order[:3] == ["urgent_new", "routine_old", "monitor_new"]
    assert order.index("urgent_old") == 5  # with the rest, by its creation time


@pytest.mark.parametrize(
    ("review_state", "expected"),
    [
        ("unreviewed", ["urgent_old", "urgent_new", "routine_old", "monitor_new", "rejected"]),
        ("signed_off", ["urgent_signed"]),
        ("diagnosis_confirmed", ["routine_confirmed"]),
    ],
)
def test_the_review_state_filter(
    client: TestClient, tenant: str, worklist: list[str], review_state: str, expected: list[str]
) -> None:
    assert _ids(client, tenant, sort="priority", review_state=review_state) == expected
    # A rejected image is unreviewed too (it cannot be reviewed): it is listed, after those awaiting review.
    assert sorted(_ids(client, tenant, review_state=review_state)) == sorted(expected)


def test_filters_combine_with_the_priority_order(
    client: TestClient, tenant: str, worklist: list[str]
) -> None:
    assert _ids(client, tenant, sort="priority", triage_level="urgent") == [
        "urgent_old",
        "urgent_new",
        "urgent_signed",
    ]
    assert _ids(client, tenant, sort="priority", status="done", review_state="unreviewed") == worklist[:4]


def test_a_cursor_only_works_with_the_order_that_issued_it(
    client: TestClient, tenant: str, worklist: list[str]
) -> None:
    newest_cursor = _page(client, tenant, limit=2)["next_cursor"]
    priority_cursor = _page(client, tenant, sort="priority", limit=2)["next_cursor"]

    for params in ({"sort": "priority", "cursor": newest_cursor}, {"cursor": priority_cursor}):
        response = client.get(LIST, params=params, headers=tenant_headers(tenant))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "cursor.invalid"


@pytest.mark.parametrize("params", [{"sort": "urgent"}, {"review_state": "approved"}])
def test_unknown_sort_or_review_state_is_request_invalid(
    client: TestClient, tenant: str, params: dict[str, str]
) -> None:
    response = client.get(LIST, params=params, headers=tenant_headers(tenant))

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "request.invalid"


def test_another_tenants_jobs_never_appear(
    client: TestClient, tenant: str, other_tenant: str, worklist: list[str]
) -> None:
    finish(client, other_tenant, "theirs")

    assert "theirs" not in _ids(client, tenant, sort="priority")
    assert _ids(client, other_tenant, sort="priority") == ["theirs"]


def _statements(client: TestClient, tenant: str, **params: Any) -> int:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    count = 0

    def counted(*_: Any) -> None:
        nonlocal count
        count += 1

    event.listen(engine, "before_cursor_execute", counted)
    try:
        _page(client, tenant, **params)
    finally:
        event.remove(engine, "before_cursor_execute", counted)
    return count


def test_a_page_costs_the_same_queries_however_many_rows_were_reviewed(
    client: TestClient, db: Session, tenant: str
) -> None:
    clinician = actor_headers(db, tenant)
    for i in range(3):
        finish(client, tenant, f"job_{i}")
        client.post(f"/internal/v1/jobs/job_{i}/reviews", json={"triage_level": "urgent"}, headers=clinician)
    few = _statements(client, tenant, sort="priority")
    for i in range(3, 12):
        finish(client, tenant, f"job_{i}")
        client.post(f"/internal/v1/jobs/job_{i}/reviews", json={"triage_level": "routine"}, headers=clinician)

    many = _statements(client, tenant, sort="priority")

    assert many == few
    page = _page(client, tenant, sort="priority")
    assert all(item["result"]["review"]["version"] == 1 for item in page["items"])
