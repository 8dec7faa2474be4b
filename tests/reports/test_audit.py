"""The audit trail (issue 12), on both backends: a user's reads of reports, images, heatmaps,
FHIR bundles, PDFs and worklist pages are recorded with who, when and from where; the fleet's own
reads are not; admins read it back filtered and paged; nothing changes an entry (on PostgreSQL a
trigger refuses UPDATE); the sweeper purges entries past the retention period, and only those."""

from __future__ import annotations

import base64
import io
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from contracts.users import Role
from services.common.task_queue import TaskQueue
from services.reports.config import Settings
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.models import AuditEvent
from services.reports.db.types import utc_now
from services.reports.sweeper import Sweeper
from tests.reports.actors import CLIENT_IP, USER_AGENT, acting, make_user
from tests.reports.factories import job_body, report_body, stored_image, tenant_headers

AUDIT = "/internal/v1/audit"
JOBS = "/internal/v1/jobs"


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE, HEATMAP = _png((180, 120, 100)), _png((255, 0, 0))


def _job(client: TestClient, tenant: str, job_id: str, *, finished: bool = True) -> None:
    body = job_body(tenant, job_id=job_id, image=stored_image(IMAGE))
    assert client.post(JOBS, json=body, headers=tenant_headers(tenant)).status_code == 201
    if finished:
        report = report_body(tenant, job_id)
        report["heatmap_png_b64"] = base64.b64encode(HEATMAP).decode()
        answer = client.put(f"/internal/v1/reports/{job_id}", json=report, headers=tenant_headers(tenant))
        assert answer.status_code == 200, answer.text


def _entries(db: Session) -> list[AuditEvent]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def _add(db: Session, tenant: str, action: str, age: timedelta = timedelta(0), **fields: Any) -> AuditEvent:
    """An entry written directly, `age` in the past (what time passing would do)."""
    event = AuditEvent(tenant_id=tenant, action=action, resource_type="job", at=utc_now() - age, **fields)
    db.add(event)
    db.commit()
    return event


def test_reading_a_result_its_image_and_heatmap_records_who_when_and_from_where(
    client: TestClient, db: Session, tenant: str
) -> None:
    clinician = make_user(db, tenant, "Dr Chen", Role.clinician)
    _job(client, tenant, "job_a")
    before = utc_now()
    for path, request_id in (("", "req-1"), ("/image", "req-2"), ("/heatmap.png", "req-3")):
        response = client.get(
            f"{JOBS}/job_a{path}", headers=acting(clinician, **{"X-Request-ID": request_id})
        )
        assert response.status_code == 200, response.text

    entries = _entries(db)
    assert [(e.action, e.resource_type, e.resource_id, e.request_id) for e in entries] == [
        ("report.read", "job", "job_a", "req-1"),
        ("image.read", "job", "job_a", "req-2"),
        ("heatmap.read", "job", "job_a", "req-3"),
    ]
    for entry in entries:
        assert (entry.tenant_id, entry.user_id, entry.user_name, entry.role) == (
            tenant,
            clinician.id,
            "Dr Chen",
            "clinician",
        )
        assert (entry.key_id, entry.client_ip, entry.user_agent) == ("key_test", CLIENT_IP, USER_AGENT)
        assert before - timedelta(seconds=1) <= entry.at <= utc_now()


def test_fhir_and_pdf_reads_are_recorded(client: TestClient, db: Session, tenant: str) -> None:
    clinician = make_user(db, tenant, "Dr Chen", Role.clinician)
    _job(client, tenant, "job_a")
    assert client.get(f"{JOBS}/job_a/fhir", headers=acting(clinician)).status_code == 200
    assert client.get(f"{JOBS}/job_a/report.pdf", headers=acting(clinician)).status_code == 200
    assert [(e.action, e.resource_id, e.user_id) for e in _entries(db)] == [
        ("fhir.read", "job_a", clinician.id),
        ("pdf.read", "job_a", clinician.id),
    ]


def test_a_job_without_a_result_and_the_fleets_own_reads_are_not_recorded(
    client: TestClient, db: Session, tenant: str
) -> None:
    clinician = make_user(db, tenant, "Dr Chen", Role.clinician)
    _job(client, tenant, "job_queued", finished=False)
    _job(client, tenant, "job_done")
    assert client.get(f"{JOBS}/job_queued", headers=acting(clinician)).status_code == 200
    # No actor header: a worker, the dispatcher, the sweeper.
    for path in ("", "/image", "/heatmap.png", "/fhir", "/report.pdf"):
        assert client.get(f"{JOBS}/job_done{path}", headers=tenant_headers(tenant)).status_code == 200
    assert client.get("/internal/v1/reports", headers=tenant_headers(tenant)).status_code == 200
    assert _entries(db) == []


def test_each_worklist_page_is_one_entry(client: TestClient, db: Session, tenant: str) -> None:
    clinician = make_user(db, tenant, "Dr Chen", Role.clinician)
    for job_id in ("job_a", "job_b", "job_c"):
        _job(client, tenant, job_id)
    first = client.get("/internal/v1/reports", params={"limit": 2}, headers=acting(clinician)).json()
    client.get(
        "/internal/v1/reports", params={"limit": 2, "cursor": first["next_cursor"]}, headers=acting(clinician)
    )
    entries = _entries(db)
    assert [(e.action, e.resource_type, e.details) for e in entries] == [
        ("report.list", "report", {"count": 2}),
        ("report.list", "report", {"count": 1}),
    ]


def test_admins_filter_the_trail_by_user_action_resource_and_time(
    client: TestClient, db: Session, tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    _add(db, tenant, "report.read", timedelta(hours=3), user_id="usr_a", resource_id="job_1")
    _add(db, tenant, "image.read", timedelta(hours=2), user_id="usr_a", resource_id="job_1")
    _add(db, tenant, "report.read", timedelta(hours=1), user_id="usr_b", resource_id="job_2")
    now = utc_now()

    def actions(**params: Any) -> list[tuple[str, str | None]]:
        response = client.get(AUDIT, params=params, headers=tenant_headers(tenant))
        assert response.status_code == 200, response.text
        return [(item["action"], item["resource_id"]) for item in response.json()["items"]]

    assert actions() == [("report.read", "job_2"), ("image.read", "job_1"), ("report.read", "job_1")]
    assert actions(user_id="usr_a") == [("image.read", "job_1"), ("report.read", "job_1")]
    assert actions(action="report.read") == [("report.read", "job_2"), ("report.read", "job_1")]
    assert actions(resource_type="job", resource_id="job_2") == [("report.read", "job_2")]
    assert actions(since=(now - timedelta(minutes=150)).isoformat()) == [
        ("report.read", "job_2"),
        ("image.read", "job_1"),
    ]
    assert actions(until=(now - timedelta(minutes=150)).isoformat()) == [("report.read", "job_1")]
    assert actions(resource_type="lesion") == []
    unknown = client.get(AUDIT, params={"action": "report.delete"}, headers=acting(admin))
    assert unknown.status_code == 422


def test_keyset_paging_walks_every_entry_once_newest_first(
    client: TestClient, db: Session, tenant: str
) -> None:
    same_moment = utc_now() - timedelta(minutes=5)
    ids = []
    for index in range(7):
        # Three entries share one timestamp: the id breaks the tie.
        at = same_moment if index < 3 else same_moment + timedelta(seconds=index)
        event = AuditEvent(
            tenant_id=tenant, action="report.read", resource_type="job", resource_id=f"j{index}", at=at
        )
        db.add(event)
        db.commit()
        ids.append(event.id)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get(AUDIT, params=params, headers=tenant_headers(tenant)).json()
        seen += [item["event_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [ids[6], ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]]


def test_a_cursor_not_made_by_the_audit_listing_is_refused(client: TestClient, tenant: str) -> None:
    for cursor in ("garbage", "eyJ2IjoxLCJ0IjoiMjAyNi0wMS0wMVQwMDowMDowMCswMDowMCIsImlkIjoiam9iIn0"):
        response = client.get(AUDIT, params={"cursor": cursor}, headers=tenant_headers(tenant))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "cursor.invalid"


def test_reading_the_trail_is_recorded_and_shows_only_the_tenants_own(
    client: TestClient, db: Session, tenant: str, other_tenant: str
) -> None:
    admin = make_user(db, tenant, "Ada Admin", Role.admin)
    _add(db, other_tenant, "report.read", resource_id="their_job")
    _add(db, tenant, "report.read", resource_id="our_job")
    page = client.get(AUDIT, params={"action": "report.read"}, headers=acting(admin)).json()
    assert [item["resource_id"] for item in page["items"]] == ["our_job"]
    item = page["items"][0]
    assert set(item) == {
        "event_id", "at", "action", "resource_type", "resource_id", "user_id", "user_name", "role",
        "key_id", "client_ip", "user_agent", "request_id", "details",
    }  # fmt: skip
    (read,) = [e for e in _entries(db) if e.action == "audit.read"]
    assert (read.tenant_id, read.user_id, read.details) == (
        tenant,
        admin.id,
        {"filters": {"action": "report.read"}},
    )


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
def test_no_route_changes_or_deletes_an_entry(
    client: TestClient, db: Session, tenant: str, method: str
) -> None:
    event = _add(db, tenant, "report.read", resource_id="job_1")
    for path in (AUDIT, f"{AUDIT}/{event.id}"):
        response = client.request(method, path, headers=tenant_headers(tenant), json={"action": "x"})
        assert response.status_code in (404, 405), (method, path)
    assert [e.action for e in _entries(db)] == ["report.read"]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgresql_refuses_an_update_of_an_entry(db: Session, tenant: str) -> None:
    event = _add(db, tenant, "report.read", user_id="usr_a", resource_id="job_1")
    with pytest.raises(DBAPIError, match="append-only"):
        db.execute(update(AuditEvent).where(AuditEvent.id == event.id).values(user_id="usr_forged"))
    db.rollback()
    with pytest.raises(DBAPIError, match="append-only"):
        db.execute(text("UPDATE audit_events SET action = 'nothing'"))
    db.rollback()
    assert [(e.user_id, e.action) for e in _entries(db)] == [("usr_a", "report.read")]


def _sweeper(settings: Settings, tmp_path_broker: str, **overrides: Any) -> Sweeper:
    engine = make_engine(settings.database_url)
    purge_settings = settings.model_copy(update=overrides)
    return Sweeper(make_sessionmaker(engine), TaskQueue.from_broker_url(tmp_path_broker), purge_settings)


def test_the_purge_deletes_only_entries_past_the_retention_in_chunks(
    settings: Settings, db: Session, tenant: str, other_tenant: str, tmp_path: Any
) -> None:
    for index in range(5):
        _add(db, tenant if index % 2 else other_tenant, "report.read", timedelta(days=400 + index))
    _add(db, tenant, "image.read", timedelta(days=364))
    _add(db, tenant, "heatmap.read")
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"

    kept_forever = _sweeper(settings, broker, audit_retention_days=0, audit_purge_chunk_size=2)
    assert kept_forever.purge_audit_once() == 0
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == 7

    sweeper = _sweeper(settings, broker, audit_retention_days=365, audit_purge_chunk_size=2)
    assert sweeper.purge_audit_once() == 5  # three chunks: 2, 2, 1
    assert sorted(e.action for e in _entries(db)) == ["heatmap.read", "image.read"]
    assert sweeper.purge_audit_once() == 0
