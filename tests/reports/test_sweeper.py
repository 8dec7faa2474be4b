"""Convergence (issue 10): leases on running jobs, late registrations, and the sweeper that
re-publishes what lost its task, on both database backends and a real broker (kombu's SQLAlchemy
transport on a SQLite file, the embedded default; Redis in the fault tests)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from contracts.jobs import InferenceChunk, InferenceTask
from services.common.task_queue import TaskQueue
from services.reports.api.routes import jobs as job_routes
from services.reports.config import Settings
from services.reports.db.engine import make_engine, make_sessionmaker
from services.reports.db.models import Job
from services.reports.db.sweeps import expired_leases, stale_queued
from services.reports.db.types import utc_now
from services.reports.sweeper import Sweeper, inference_task
from tests.reports.factories import PNG_BYTES, job_body, report_body, tenant_headers
from tests.reports.migrate import alembic_config

JOBS = "/internal/v1/jobs"


def _create(client: TestClient, tenant: str, job_id: str, **fields: Any) -> dict[str, Any]:
    response = client.post(JOBS, json=job_body(tenant, job_id, **fields), headers=tenant_headers(tenant))
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _row(db: Session, job_id: str) -> Job:
    db.expire_all()
    job = db.get(Job, job_id)
    assert job is not None
    return job


def _age(
    db: Session, job_id: str, *, enqueued_seconds_ago: float = 0, lease_seconds_left: float | None = None
) -> None:
    """Move a job's clock fields into the past (what waiting would do)."""
    now = utc_now()
    values: dict[str, Any] = {"enqueued_at": now - timedelta(seconds=enqueued_seconds_ago)}
    if lease_seconds_left is not None:
        values["lease_expires_at"] = now + timedelta(seconds=lease_seconds_left)
    db.execute(update(Job).where(Job.id == job_id).values(**values))
    db.commit()


# ---- leases -------------------------------------------------------------------------------


def test_marking_running_takes_a_lease_of_the_workers_length(
    client: TestClient, db: Session, tenant: str
) -> None:
    _create(client, tenant, "j1")
    before = utc_now()

    client.post(f"{JOBS}/j1/running", json={"lease_seconds": 90}, headers=tenant_headers(tenant))

    lease = _row(db, "j1").lease_expires_at
    assert lease is not None
    assert before + timedelta(seconds=89) <= lease <= utc_now() + timedelta(seconds=91)


def test_a_running_job_tried_again_renews_its_lease_and_an_ended_one_is_named(
    client: TestClient, db: Session, tenant: str, settings: Settings
) -> None:
    for job_id in ("again", "done-one", "failed-one"):
        _create(client, tenant, job_id)
    headers = tenant_headers(tenant)
    client.post(f"{JOBS}/running", json={"job_ids": ["again"], "lease_seconds": 5}, headers=headers)
    client.put("/internal/v1/reports/done-one", json=report_body(tenant, "done-one"), headers=headers)
    client.post(
        f"{JOBS}/failed-one/fail",
        json={"job_id": "failed-one", "tenant_id": tenant, "error_code": "image.corrupt", "message": "m"},
        headers=headers,
    )

    answer = client.post(
        f"{JOBS}/running",
        json={"job_ids": ["again", "done-one", "failed-one"], "lease_seconds": 600},
        headers=headers,
    ).json()

    assert answer == {"changed": 1, "finished": {"done-one": "done", "failed-one": "failed"}, "busy": []}
    lease = _row(db, "again").lease_expires_at
    assert lease is not None and lease > utc_now() + timedelta(seconds=500)
    # Without a lease length the service's default applies.
    client.post(f"{JOBS}/again/running", headers=headers)
    default = _row(db, "again").lease_expires_at
    assert default is not None
    assert default < utc_now() + timedelta(seconds=settings.default_lease_seconds + 1)


def test_a_job_held_by_another_runners_live_lease_is_busy_for_everyone_else(
    client: TestClient, db: Session, tenant: str
) -> None:
    # Two messages for one job: a retry waiting in a worker, and the sweeper's re-publication.
    _create(client, tenant, "twice")
    headers = tenant_headers(tenant)

    def mark(runner: str) -> dict[str, Any]:
        body = {"job_ids": ["twice"], "lease_seconds": 60, "runner": runner}
        answer: dict[str, Any] = client.post(f"{JOBS}/running", json=body, headers=headers).json()
        return answer

    assert mark("task-a") == {"changed": 1, "finished": {}, "busy": []}
    # Only the holder runs it; its own retry renews the lease.
    assert mark("task-b") == {"changed": 0, "finished": {}, "busy": ["twice"]}
    assert mark("task-a") == {"changed": 1, "finished": {}, "busy": []}
    assert _row(db, "twice").lease_owner == "task-a"
    # The holder died: once its lease has run out, another runner may take the job.
    db.execute(update(Job).where(Job.id == "twice").values(lease_expires_at=utc_now() - timedelta(seconds=1)))
    db.commit()
    assert mark("task-b") == {"changed": 1, "finished": {}, "busy": []}
    assert _row(db, "twice").lease_owner == "task-b"
    # A worker that names no runner (from before leases had owners) renews as before.
    plain = client.post(f"{JOBS}/running", json={"job_ids": ["twice"]}, headers=headers).json()
    assert plain == {"changed": 1, "finished": {}, "busy": []}


# ---- late registrations -------------------------------------------------------------------


def test_a_registration_that_outlasted_its_caller_is_failed_and_answered_503(
    client: TestClient, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_routes, "seconds_waiting", lambda state: 11.0)  # a hung database
    headers = tenant_headers(tenant)

    late = client.post(JOBS, json=job_body(tenant, "late", register_within_ms=9000), headers=headers)
    patient = client.post(JOBS, json=job_body(tenant, "patient"), headers=headers)  # no deadline given

    assert late.status_code == 503
    assert late.json()["error"]["code"] == "dependency.unavailable"
    monkeypatch.undo()
    job = client.get(f"{JOBS}/late", headers=headers).json()
    assert (job["status"], job["error_code"]) == ("failed", "registration.timeout")
    assert patient.status_code == 201
    # The client's Idempotency-Key retry queues it after all.
    requeued = client.post(f"{JOBS}/late/requeue", headers=headers).json()
    assert (requeued["status"], requeued["error_code"]) == ("queued", None)


def test_a_registration_within_its_callers_patience_is_kept(client: TestClient, tenant: str) -> None:
    response = client.post(
        JOBS, json=job_body(tenant, "quick", register_within_ms=60_000), headers=tenant_headers(tenant)
    )

    assert response.status_code == 201
    assert response.json()["status"] == "queued"


def test_a_late_bulk_registration_fails_its_new_jobs_but_not_a_replayed_one(
    client: TestClient, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = tenant_headers(tenant)
    _create(client, tenant, "earlier")
    monkeypatch.setattr(job_routes, "seconds_waiting", lambda state: 30.0)
    jobs = [
        job_body(tenant, "earlier", register_within_ms=5000),
        job_body(tenant, "new", register_within_ms=5000),
    ]

    response = client.post(f"{JOBS}/bulk", json={"jobs": jobs}, headers=headers)

    assert response.status_code == 503
    monkeypatch.undo()
    assert client.get(f"{JOBS}/earlier", headers=headers).json()["status"] == "queued"
    assert client.get(f"{JOBS}/new", headers=headers).json()["error_code"] == "registration.timeout"


# ---- the sweeper --------------------------------------------------------------------------


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[TaskQueue]:
    """A real, empty inference queue (kombu's SQLAlchemy transport on a scratch SQLite file)."""
    task_queue = TaskQueue.from_broker_url(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    yield task_queue
    task_queue.close()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _sweeper(
    sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings, **overrides: Any
) -> Sweeper:
    return Sweeper(sessions, queue, settings.model_copy(update=overrides))


def _drain(queue: TaskQueue) -> list[InferenceTask]:
    """Every task in the queue's messages, in order (the messages are consumed)."""
    tasks: list[InferenceTask] = []
    with queue.app.connection_for_read() as connection:
        simple = connection.SimpleQueue("inference")
        while simple.qsize():
            message = simple.get(timeout=1)
            payload = message.payload
            body = payload[1]["payload"] if isinstance(payload, list) else payload["kwargs"]["payload"]
            name = message.headers["task"]
            tasks += (
                InferenceChunk.model_validate(body).tasks
                if name.endswith("chunk")
                else [InferenceTask.model_validate(body)]
            )
            message.ack()
        simple.close()
    return tasks


def test_a_running_job_whose_lease_ran_out_is_queued_again_and_republished(
    client: TestClient,
    db: Session,
    tenant: str,
    sessions: sessionmaker[Session],
    queue: TaskQueue,
    settings: Settings,
) -> None:
    for job_id in ("lost", "held"):
        _create(client, tenant, job_id)
        client.post(f"{JOBS}/{job_id}/running", headers=tenant_headers(tenant))
    _age(db, "lost", lease_seconds_left=-1)

    outcome = _sweeper(sessions, queue, settings).sweep_once()

    assert (outcome.republished, outcome.abandoned) == (1, 0)
    lost, held = _row(db, "lost"), _row(db, "held")
    assert (lost.status, lost.redrives, lost.lease_expires_at) == ("queued", 1, None)
    assert held.status == "running"
    [task] = _drain(queue)
    assert (task.job_id, task.tenant_id) == ("lost", tenant)
    assert base64.b64decode(task.image.data_b64) == PNG_BYTES
    # Only what a model may fuse travels; the identifiers stay in the database.
    assert task.clinical is not None and (task.clinical.age, task.clinical.body_site) == (54, "back")


def test_a_queued_job_is_republished_only_past_the_grace_and_only_when_the_queue_is_empty(
    client: TestClient,
    db: Session,
    tenant: str,
    sessions: sessionmaker[Session],
    queue: TaskQueue,
    settings: Settings,
) -> None:
    for job_id in ("orphan", "fresh"):
        _create(client, tenant, job_id)
    _age(db, "orphan", enqueued_seconds_ago=settings.sweep_queued_grace_seconds + 5)
    sweeper = _sweeper(sessions, queue, settings)
    waiting = InferenceTask.model_validate(
        {
            "job_id": "other",
            "tenant_id": tenant,
            "image": job_body(tenant)["image"],
            "submitted_at": utc_now(),
        }
    )
    queue.send_tasks([waiting])

    busy = sweeper.sweep_once()  # a message is waiting: the orphan may be behind it

    assert (busy.queue_depth, busy.republished) == (1, 0)
    assert [task.job_id for task in _drain(queue)] == ["other"]
    empty = sweeper.sweep_once()
    assert (empty.queue_depth, empty.republished) == (0, 1)
    assert [task.job_id for task in _drain(queue)] == ["orphan"]
    assert _row(db, "fresh").redrives == 0
    # Re-published means enqueued now: the next sweep leaves it to its new message.
    assert sweeper.sweep_once().republished == 0


def test_a_job_taken_back_too_often_is_failed_abandoned(
    client: TestClient,
    db: Session,
    tenant: str,
    sessions: sessionmaker[Session],
    queue: TaskQueue,
    settings: Settings,
) -> None:
    _create(client, tenant, "poison")
    sweeper = _sweeper(sessions, queue, settings, sweep_max_redrives=2)
    for _ in range(2):
        client.post(f"{JOBS}/poison/running", headers=tenant_headers(tenant))
        _age(db, "poison", lease_seconds_left=-1)
        assert sweeper.sweep_once().republished == 1
    client.post(f"{JOBS}/poison/running", headers=tenant_headers(tenant))
    _age(db, "poison", lease_seconds_left=-1)

    outcome = sweeper.sweep_once()

    assert (outcome.republished, outcome.abandoned) == (0, 1)
    job = client.get(f"{JOBS}/poison", headers=tenant_headers(tenant)).json()
    assert (job["status"], job["error_code"]) == ("failed", "job.abandoned")
    assert len(_drain(queue)) == 2


def test_finished_and_failed_jobs_are_never_swept(
    client: TestClient,
    db: Session,
    tenant: str,
    sessions: sessionmaker[Session],
    queue: TaskQueue,
    settings: Settings,
) -> None:
    headers = tenant_headers(tenant)
    for job_id in ("done-one", "failed-one"):
        _create(client, tenant, job_id)
        client.post(f"{JOBS}/{job_id}/running", headers=headers)
        _age(db, job_id, enqueued_seconds_ago=3600, lease_seconds_left=-60)
    client.put("/internal/v1/reports/done-one", json=report_body(tenant, "done-one"), headers=headers)
    client.post(
        f"{JOBS}/failed-one/fail",
        json={"job_id": "failed-one", "tenant_id": tenant, "error_code": "image.corrupt", "message": "m"},
        headers=headers,
    )

    outcome = _sweeper(sessions, queue, settings).sweep_once()

    assert (outcome.republished, outcome.abandoned) == (0, 0)
    assert _drain(queue) == []


def test_an_unreachable_broker_leaves_every_job_as_it_was(
    client: TestClient, db: Session, tenant: str, sessions: sessionmaker[Session], settings: Settings
) -> None:
    _create(client, tenant, "lost")
    client.post(f"{JOBS}/lost/running", headers=tenant_headers(tenant))
    _age(db, "lost", lease_seconds_left=-1)
    down = TaskQueue.from_broker_url("redis://127.0.0.1:1/0")
    try:
        outcome = _sweeper(sessions, down, settings).sweep_once()
    finally:
        down.close()

    assert outcome.queue_depth is None
    assert (_row(db, "lost").status, _row(db, "lost").redrives) == ("running", 0)


# Row locks are PostgreSQL's (SQLite has one writer at a time): this one runs there only.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_concurrent_sweeps_claim_disjoint_jobs(
    client: TestClient, db: Session, tenant: str, sessions: sessionmaker[Session]
) -> None:
    for job_id in ("a", "b", "c"):
        _create(client, tenant, job_id)
        client.post(f"{JOBS}/{job_id}/running", headers=tenant_headers(tenant))
        _age(db, job_id, lease_seconds_left=-1)

    with sessions() as first, sessions() as second:
        claimed_first = expired_leases(first, utc_now(), limit=2)
        claimed_second = expired_leases(second, utc_now(), limit=10)  # skips the locked rows

        assert len(claimed_first) == 2
        assert {job.id for job in claimed_second} == {"a", "b", "c"} - {job.id for job in claimed_first}
        first.rollback()
        second.rollback()


# ---- migration 0005 -----------------------------------------------------------------------


def test_migration_0005_backfills_enqueued_at_and_leaves_old_running_jobs_to_their_message(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    command.upgrade(alembic_config(url), "0004")
    engine = make_engine(url)
    created = "2026-11-01 12:00:00.000000"
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :at)"), {"at": created}
            )
            for job_id, status in (("old-queued", "queued"), ("old-running", "running")):
                connection.execute(
                    text(
                        "INSERT INTO jobs (id, tenant_id, status, image, media_type, width, height, "
                        "image_sha256, created_at, updated_at) "
                        "VALUES (:id, 't1', :status, x'00', 'image/png', 1, 1, 'ab', :at, :at)"
                    ),
                    {"id": job_id, "status": status, "at": created},
                )
        command.upgrade(alembic_config(url), "head")
        with make_sessionmaker(engine)() as session:
            queued, running = session.get(Job, "old-queued"), session.get(Job, "old-running")
            assert queued is not None and running is not None
            assert queued.enqueued_at == queued.created_at
            assert (queued.redrives, running.lease_expires_at) == (0, None)
            # No lease, so no sweep takes it back; a queued one is swept as any other.
            assert expired_leases(session, utc_now(), limit=10) == []
            assert [job.id for job in stale_queued(session, utc_now(), limit=10)] == ["old-queued"]
        command.downgrade(alembic_config(url), "0004")
        command.upgrade(alembic_config(url), "head")
    finally:
        engine.dispose()


def test_a_republished_task_asks_for_comparison_measures_only_for_an_image_of_a_lesion() -> None:
    def stored(lesion_id: str | None) -> Job:
        return Job(
            id=f"job-{lesion_id}",
            tenant_id="ten",
            media_type="image/png",
            width=4,
            height=3,
            image_sha256="0" * 64,
            image=PNG_BYTES,
            created_at=utc_now(),
            lesion_id=lesion_id,
        )

    assert inference_task(stored("les_1"), "req").track_lesion is True
    assert inference_task(stored(None), "req").track_lesion is False
