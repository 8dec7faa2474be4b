"""Overload: past the queue bound 503 `queue.full`, past a tenant's rate 429 `rate.limited`, both
with `Retry-After`, and a refused request registers and queues nothing (accepted work is kept)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from contracts.errors import DomainError
from services.gateway.adapters.task_publisher import CeleryTaskPublisher, build_celery_app
from services.gateway.api.app import create_app
from services.gateway.domain.admission import QueueDepthGuard, TenantRateLimiter
from tests.gateway.conftest import error_code, make_settings
from tests.gateway.fakes import KEY_A, KEY_B, FakeReports, InMemoryPublisher
from tests.gateway.samples import jpeg
from tests.gateway.test_task_publisher import _task


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _refusal(call) -> DomainError:  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as caught:
        call()
    return caught.value


# -- the token bucket ---------------------------------------------------------------------------


def test_a_tenant_gets_its_burst_then_is_refused_with_the_wait_until_a_token_is_back() -> None:
    clock = FakeClock()
    limiter = TenantRateLimiter(rate=0.5, burst=2, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    refused = _refusal(lambda: limiter.acquire("a"))
    assert (refused.code, refused.status) == ("rate.limited", 429)
    assert refused.headers == {"Retry-After": "2"}  # one token at 0.5/s
    limiter.acquire("b")  # another tenant has its own bucket
    clock.now += 2.0
    limiter.acquire("a")  # refilled
    assert _refusal(lambda: limiter.acquire("a")).code == "rate.limited"


def test_a_refused_request_takes_no_tokens_and_a_batch_above_the_burst_costs_the_burst() -> None:
    clock = FakeClock()
    limiter = TenantRateLimiter(rate=1.0, burst=3, clock=clock)
    limiter.acquire("a", images=100)  # a batch larger than the burst can pass on a full bucket
    assert _refusal(lambda: limiter.acquire("a", images=1)).headers["Retry-After"] == "1"
    clock.now += 1.0
    limiter.acquire("a")  # the refusal above did not eat the token that came back


def test_a_zero_rate_disables_the_limit() -> None:
    limiter = TenantRateLimiter(rate=0, burst=1, clock=FakeClock())
    for _ in range(1000):
        limiter.acquire("a")


# -- the queue bound ------------------------------------------------------------------------------


async def test_the_queue_guard_refuses_at_the_bound_and_counts_what_it_admitted_inside_its_window() -> None:
    depth: list[int | None] = [3]
    reads = 0

    async def read() -> int | None:
        nonlocal reads
        reads += 1
        return depth[0]

    clock = FakeClock()
    guard = QueueDepthGuard(read, 5, retry_after_seconds=7, cache_seconds=1.0, clock=clock)
    await guard.check()  # 3 -> 4
    await guard.check()  # 4 -> 5
    with pytest.raises(DomainError) as caught:
        await guard.check()
    assert (caught.value.code, caught.value.status, caught.value.headers) == (
        "queue.full",
        503,
        {"Retry-After": "7"},
    )
    assert reads == 1  # one broker read per window
    depth[0] = 0  # the worker drained the queue
    clock.now += 1.0
    await guard.check()
    assert reads == 2
    depth[0] = None  # unreadable: admit, the publish decides
    clock.now += 1.0
    await guard.check()


async def test_the_backlog_is_the_brokers_depth_at_the_last_read_not_what_was_admitted_since() -> None:
    depth: list[int | None] = [0]

    async def read() -> int | None:
        return depth[0]

    clock = FakeClock()
    guard = QueueDepthGuard(read, 100, retry_after_seconds=1, cache_seconds=1.0, clock=clock)
    assert guard.backlog() is False  # nothing read yet
    await guard.check()
    await guard.check()  # admitted inside the window: counted for the bound, not as a backlog
    assert guard.backlog() is False
    depth[0] = 3
    clock.now += 1.0
    await guard.check()
    assert guard.backlog() is True
    depth[0] = None
    clock.now += 1.0
    await guard.check()
    assert guard.backlog() is False  # unknown is no backlog: nothing lingers on a guess


# -- through the API ------------------------------------------------------------------------------


@asynccontextmanager
async def _serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` (lifespan included) as tenant A."""
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {KEY_A}"},
        ) as http,
    ):
        yield http


@pytest.fixture
async def limited_client(
    publisher: InMemoryPublisher, reports: FakeReports
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(tenant_rate_per_second=0.01, tenant_burst=2, max_queue_depth=100)
    async with _serving(create_app(settings, publisher=publisher)) as http:
        yield http


async def test_past_the_rate_the_gateway_answers_429_and_registers_nothing(
    limited_client: httpx.AsyncClient,
    publisher: InMemoryPublisher,
    reports: FakeReports,
) -> None:
    jpeg_bytes = jpeg()
    for _ in range(2):
        assert (
            await limited_client.post("/v1/images", files={"file": ("a.jpg", jpeg_bytes)})
        ).status_code == 202
    refused = await limited_client.post("/v1/images", files={"file": ("a.jpg", jpeg_bytes)})
    assert refused.status_code == 429 and error_code(refused) == "rate.limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(publisher.tasks) == 2 and len(reports.jobs) == 2  # the accepted two are kept
    other = await limited_client.post(
        "/v1/images", files={"file": ("a.jpg", jpeg_bytes)}, headers={"Authorization": f"Bearer {KEY_B}"}
    )
    assert other.status_code == 202  # the limit is per tenant


async def test_past_the_queue_bound_images_and_batches_get_503_queue_full_and_nothing_is_registered(
    limited_client: httpx.AsyncClient,
    publisher: InMemoryPublisher,
    reports: FakeReports,
) -> None:
    jpeg_bytes = jpeg()
    publisher.depth = 100
    single = await limited_client.post("/v1/images", files={"file": ("a.jpg", jpeg_bytes)})
    batch = await limited_client.post(
        "/v1/batches", files=[("files", ("a.jpg", jpeg_bytes)), ("files", ("b.jpg", jpeg_bytes))]
    )
    for refused in (single, batch):
        assert refused.status_code == 503 and error_code(refused) == "queue.full"
        assert refused.headers["Retry-After"] == "5"
    assert publisher.tasks == [] and reports.jobs == {} and reports.batches == {}


# -- the real broker's count ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
async def test_queue_depth_is_the_number_of_messages_waiting_on_a_real_broker(
    backend: str, request: pytest.FixtureRequest, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    if backend == "redis":
        broker_url = request.getfixturevalue("redis_url")
    else:
        broker_url = f"sqla+sqlite:///{tmp_path}/broker.db"
    publisher = CeleryTaskPublisher(build_celery_app(broker_url))
    try:
        with publisher.queue.app.connection_for_write() as connection:  # a clean queue on the scratch db
            connection.default_channel.queue_purge("inference")
        before = await publisher.queue_depth()
        assert before is not None
        for _ in range(3):
            await publisher.publish(_task(uuid.uuid4().hex))
        assert await publisher.queue_depth() == before + 3
        with publisher.queue.app.connection_for_write() as connection:
            connection.default_channel.queue_purge("inference")
        assert await publisher.queue_depth() == 0
    finally:
        publisher.close()


async def test_an_unreachable_broker_reports_no_depth() -> None:
    publisher = CeleryTaskPublisher(build_celery_app("redis://127.0.0.1:1/0"))
    try:
        assert await publisher.queue_depth() is None
    finally:
        publisher.close()


async def test_with_a_real_broker_every_accepted_job_is_queued_and_every_refused_one_left_nothing(
    reports: FakeReports, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    broker = CeleryTaskPublisher(build_celery_app(f"sqla+sqlite:///{tmp_path}/broker.db"))
    settings = make_settings(max_queue_depth=3, queue_depth_cache_seconds=0)
    async with _serving(create_app(settings, publisher=broker)) as http:
        answers = [await http.post("/v1/images", files={"file": ("a.jpg", jpeg())}) for _ in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 202, 503, 503]
    assert all(a.headers.get("Retry-After") == "5" for a in answers[3:])
    accepted = {a.json()["job_id"] for a in answers[:3]}
    assert set(reports.jobs) == accepted  # nothing registered for the refused two
    with broker.queue.app.connection_for_read() as connection:
        queue = connection.SimpleQueue("inference")
        queued = set()
        while queue.qsize():
            message = queue.get(timeout=1)
            queued.add(message.headers["id"])
            message.ack()
        queue.close()
    assert queued == accepted  # every accepted job's task is waiting for a worker
