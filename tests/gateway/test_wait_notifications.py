"""`Prefer: wait` woken by the worker's job-finished notification (Redis pub/sub, a real server)
instead of polling reports: one read of the job when it finishes; polling when there is no
listener, and a fallback read when a notification never comes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import redis
import respx

from contracts.jobs import InferenceTask
from contracts.notifications import JOB_FINISHED_CHANNEL, JobFinished, notifies_over
from contracts.reports import JobView
from services.gateway.adapters.finish_listener import FinishListener, finish_listener
from services.gateway.adapters.reports_client import ReportsClient
from services.gateway.adapters.status_poller import StatusPoller
from services.gateway.api.app import create_app
from tests.gateway import samples
from tests.gateway.conftest import make_settings
from tests.gateway.fakes import INTERNAL_TOKEN, KEY_A, REPORTS_URL, TENANT_A, FakeReports, InMemoryPublisher

FINISH_AFTER_S = 0.4  # long enough for a polling wait to read the job several times first


class FinishingWorker(InMemoryPublisher):
    """Queues like the in-memory publisher; a moment later "finishes" the job in reports and, when
    given a Redis URL, publishes its notification as the worker does."""

    def __init__(self, reports: FakeReports, redis_url: str | None, send_job: bool = False) -> None:
        super().__init__()
        self.reports = reports
        self.send_job = send_job  # the message carries the stored job, as the worker's does
        self.redis = redis.Redis.from_url(redis_url) if redis_url else None
        self.background: list[asyncio.Task[None]] = []

    async def publish(self, task: InferenceTask) -> None:
        await super().publish(task)
        self.background.append(asyncio.create_task(self._finish(task)))

    async def publish_many(self, tasks: list[InferenceTask]) -> None:
        await super().publish_many(tasks)  # concurrent submissions grouped into one chunk
        self.background.extend(asyncio.create_task(self._finish(task)) for task in tasks)

    async def _finish(self, task: InferenceTask) -> None:
        await asyncio.sleep(FINISH_AFTER_S)
        self.reports.jobs[task.job_id]["status"] = "done"
        if self.redis is not None:
            stored = JobView.model_validate(self.reports._view(task.job_id)) if self.send_job else None
            message = JobFinished(job_id=task.job_id, tenant_id=task.tenant_id, status="done", job=stored)
            self.redis.publish(JOB_FINISHED_CHANNEL, message.model_dump_json())


async def _gateway(
    publisher: InMemoryPublisher, listener: FinishListener | None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(), publisher=publisher, listener=listener)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {KEY_A}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as http:
            yield http


async def _submit_and_wait(http: httpx.AsyncClient) -> httpx.Response:
    files = {"file": ("one.jpg", samples.jpeg(), "image/jpeg")}
    return await http.post("/v1/images", files=files, headers={"Prefer": "wait=5"})


async def test_a_notified_wait_reads_the_job_once(redis_url: str, reports: FakeReports) -> None:
    worker = FinishingWorker(reports, redis_url)
    async for http in _gateway(worker, FinishListener(redis_url)):
        response = await _submit_and_wait(http)

    assert response.status_code == 200
    assert response.json()["status"] == "done"
    assert reports.reads == {response.json()["job_id"]: 1}


async def test_a_notification_that_carries_the_stored_job_is_answered_without_a_read(
    redis_url: str, reports: FakeReports
) -> None:
    worker = FinishingWorker(reports, redis_url, send_job=True)
    async for http in _gateway(worker, FinishListener(redis_url)):
        response = await _submit_and_wait(http)

    assert response.status_code == 200
    assert response.json()["status"] == "done"
    assert response.json()["job_id"] == worker.tasks[0].job_id
    assert reports.reads == {}


async def test_without_notifications_the_waits_share_one_status_poll_and_read_their_job_once(
    reports: FakeReports, reports_api: respx.MockRouter
) -> None:
    # A broker without pub/sub (memory:// here, SQLite in the embedded default): every 50 ms one
    # call asks the statuses of all waited jobs, instead of one read per waiting request.
    worker = FinishingWorker(reports, None)
    async for http in _gateway(worker, None):
        responses = await asyncio.gather(*(_submit_and_wait(http) for _ in range(3)))

    assert [r.status_code for r in responses] == [200, 200, 200]
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 3 and all(r.json()["status"] == "done" for r in responses)
    asked = [json.loads(call.request.content)["job_ids"] for call in reports_api["job_statuses"].calls]
    assert max(len(ids) for ids in asked) == 3  # the three waits in one call
    ticks = FINISH_AFTER_S / 0.05
    assert len(asked) <= ticks + 4  # one call per tick, not one per wait per tick
    reads = [call.request.url.path.rsplit("/", 1)[-1] for call in reports_api["get_job"].calls]
    assert sorted(reads) == sorted(job_ids)  # each finished job read once


async def test_the_status_poller_wakes_only_finished_jobs_and_survives_a_failed_round(
    reports: FakeReports, reports_api: respx.MockRouter
) -> None:
    client = ReportsClient.create(REPORTS_URL, INTERNAL_TOKEN, 5.0)
    poller = StatusPoller(client, interval_seconds=0.01)
    reports.add_job(TENANT_A, "finished", status="done")
    reports.add_job(TENANT_A, "running", status="running")
    with poller.waiting("finished", TENANT_A) as done, poller.waiting("running", TENANT_A) as busy:
        reports_api["job_statuses"].mock(side_effect=httpx.ConnectError("reports down"))
        await poller.poll_once()  # logged, nobody woken, nothing raised
        assert not done.event.is_set()
        reports_api["job_statuses"].mock(side_effect=reports._statuses)
        await poller.poll_once()

        assert done.event.is_set() and done.message is not None and done.message.status == "done"
        assert not busy.event.is_set()
    assert poller.waited_by_tenant() == {}
    await client.aclose()


async def test_a_lost_notification_is_covered_by_the_fallback_read(
    redis_url: str, reports: FakeReports
) -> None:
    worker = FinishingWorker(reports, None)  # finishes the job but never notifies
    async for http in _gateway(worker, FinishListener(redis_url)):
        response = await _submit_and_wait(http)

    assert response.status_code == 200
    assert reports.reads[response.json()["job_id"]] == 1  # the 1 s fallback read found it done


async def test_the_listener_wakes_only_the_named_jobs_waiters_and_ignores_junk(redis_url: str) -> None:
    listener = FinishListener(redis_url)
    await listener.start()
    publisher = redis.Redis.from_url(redis_url)
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        assert listener.connected
        with listener.waiting(mine, "t") as mine_waiter, listener.waiting(other, "t") as other_waiter:
            publisher.publish(JOB_FINISHED_CHANNEL, b"not json")
            publisher.publish(
                JOB_FINISHED_CHANNEL,
                JobFinished(job_id=mine, tenant_id="t", status="failed").model_dump_json(),
            )
            await asyncio.wait_for(mine_waiter.event.wait(), 5)
            assert not other_waiter.event.is_set()
            assert mine_waiter.message is not None and mine_waiter.message.status == "failed"
    finally:
        await listener.close()
        publisher.close()


def test_only_a_redis_broker_gets_a_listener() -> None:
    assert notifies_over("redis://cache:6379/0") and notifies_over("rediss://cache:6380/0")
    assert finish_listener("sqla+sqlite:///var/celery-broker.db") is None
    assert finish_listener("memory://") is None
