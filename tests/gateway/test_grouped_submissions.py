"""Concurrent `POST /v1/images` of one tenant and user are registered with one bulk call and queued
as one `inference.predict_chunk` message (one worker micro-batch) while an earlier one is in
flight: each request still gets its own job (ids never crossed), its own request id and its own
error; a lone request goes alone at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from contracts.jobs import InferenceTask
from services.gateway.api.app import create_app
from services.gateway.api.deps import GatewayContext
from tests.gateway import samples
from tests.gateway.conftest import make_settings
from tests.gateway.fakes import KEY_A, KEY_B, FakeReports, InMemoryPublisher


class GatedPublisher(InMemoryPublisher):
    """Holds the first message it is given until `gate` is set (a slow broker round trip), so
    that the requests arriving meanwhile have to wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.holding = asyncio.Event()

    async def _hold(self) -> None:
        if not self.gate.is_set():
            self.holding.set()
            await self.gate.wait()

    async def publish(self, task: InferenceTask) -> None:
        await self._hold()
        await super().publish(task)

    async def publish_many(self, tasks: list[InferenceTask]) -> None:
        await self._hold()
        await super().publish_many(tasks)


@pytest.fixture
def gated() -> GatedPublisher:
    return GatedPublisher()


@pytest.fixture
async def app(gated: GatedPublisher, reports: FakeReports) -> AsyncIterator[FastAPI]:
    application = create_app(make_settings(task_chunk_size=8), publisher=gated)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
        yield client


def _context(app: FastAPI) -> GatewayContext:
    context = app.state.context
    assert isinstance(context, GatewayContext)
    return context


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.002)


def _post(
    http: httpx.AsyncClient, name: str, width: int, key: str = KEY_A, **headers: str
) -> asyncio.Task[httpx.Response]:
    files = {"file": (name, samples.jpeg(size=(width, 48)), "image/jpeg")}
    all_headers = {"Authorization": f"Bearer {key}", "X-Request-ID": f"req-{name}", **headers}
    return asyncio.create_task(http.post("/v1/images", files=files, headers=all_headers))


async def _first_then_waiting(
    app: FastAPI, http: httpx.AsyncClient, gated: GatedPublisher, later: list[tuple[str, int]], **headers: str
) -> tuple[httpx.Response, list[httpx.Response]]:
    """One request held in the broker, `later` sent meanwhile and left waiting, then all let go."""
    first = _post(http, "first.jpg", 64, **headers)
    await gated.holding.wait()
    waiting = [_post(http, name, width, **headers) for name, width in later]
    await _until(lambda: _context(app).registrations.waiting() == len(later))
    gated.gate.set()
    return await first, list(await asyncio.gather(*waiting))


async def test_requests_arriving_meanwhile_are_one_registration_and_one_chunk_each_with_its_own_job(
    app: FastAPI, http: httpx.AsyncClient, gated: GatedPublisher, reports: FakeReports
) -> None:
    later = [("b.jpg", 70), ("c.jpg", 80), ("d.jpg", 90)]

    first, answers = await _first_then_waiting(app, http, gated, later, Prefer="wait=1")

    ids = [first.json()["job_id"], *(answer.json()["job_id"] for answer in answers)]
    assert len(set(ids)) == 4
    # One alone, then one bulk call of the 3 (in the order they reached the gateway).
    assert [sorted(call) for call in reports.registration_calls] == [ids[:1], sorted(ids[1:])]
    assert [sorted(message) for message in gated.messages] == [ids[:1], sorted(ids[1:])]
    assert gated.messages[1] == reports.registration_calls[1]
    exposition = _context(app).metrics.render()[0].decode()
    assert "gateway_tasks_published_total 4.0" in exposition
    assert "gateway_task_messages_total 2.0" in exposition
    by_job = {task.job_id: task for task in gated.tasks}
    for (name, width), answer in zip([("first.jpg", 64), *later], [first, *answers], strict=True):
        job_id = answer.json()["job_id"]
        registered = reports.jobs[job_id]["body"]
        assert registered["filename"] == name  # never another request's job
        assert registered["image"]["width"] == width
        assert by_job[job_id].image.width == width
        assert by_job[job_id].request_id == f"req-{name}" == answer.headers["X-Request-ID"]
        assert by_job[job_id].awaited is True  # each asked to wait


async def test_a_registration_reports_refuses_fails_alone_with_the_error_it_gets_alone(
    app: FastAPI, http: httpx.AsyncClient, gated: GatedPublisher, reports: FakeReports
) -> None:
    reports.refuse_filenames = {"bad.jpg"}

    _, answers = await _first_then_waiting(
        app, http, gated, [("ok1.jpg", 70), ("bad.jpg", 80), ("ok2.jpg", 90)]
    )

    ok1, bad, ok2 = answers
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "lesion.not_found"
    assert ok1.status_code == ok2.status_code == 202
    assert sorted(gated.messages[1]) == sorted([ok1.json()["job_id"], ok2.json()["job_id"]])
    assert not any(job["body"]["filename"] == "bad.jpg" for job in reports.jobs.values())


async def test_a_broker_refusing_the_chunk_fails_each_of_its_jobs_and_leaves_none_queued(
    app: FastAPI, http: httpx.AsyncClient, gated: GatedPublisher, reports: FakeReports
) -> None:
    first = _post(http, "first.jpg", 64)
    await gated.holding.wait()
    waiting = [_post(http, name, 70 + i) for i, name in enumerate(("b.jpg", "c.jpg"))]
    await _until(lambda: _context(app).registrations.waiting() == 2)
    gated.down = True
    gated.gate.set()

    answers = [await first, *await asyncio.gather(*waiting)]

    assert [answer.status_code for answer in answers] == [503, 503, 503]
    assert {answer.json()["error"]["code"] for answer in answers} == {"upstream.unavailable"}
    assert sorted(reports.failed_jobs) == sorted(reports.jobs) and len(reports.jobs) == 3


async def test_an_idempotent_retry_in_a_group_gets_its_original_job_and_queues_nothing_new(
    app: FastAPI, http: httpx.AsyncClient, gated: GatedPublisher, reports: FakeReports
) -> None:
    gated.gate.set()
    original = await _post(http, "orig.jpg", 66, **{"Idempotency-Key": "k-1"})
    gated.gate.clear()
    gated.messages.clear()

    first = _post(http, "first.jpg", 64)
    await gated.holding.wait()
    retry = _post(http, "retry.jpg", 66, **{"Idempotency-Key": "k-1"})
    fresh = _post(http, "fresh.jpg", 72)
    await _until(lambda: _context(app).registrations.waiting() == 2)
    gated.gate.set()
    await first

    assert (await retry).json()["job_id"] == original.json()["job_id"]
    assert (await retry).headers["Idempotent-Replay"] == "true"
    assert gated.messages[1] == [(await fresh).json()["job_id"]]


async def test_requests_of_two_tenants_are_never_registered_together(
    app: FastAPI, http: httpx.AsyncClient, gated: GatedPublisher, reports: FakeReports
) -> None:
    first = _post(http, "first.jpg", 64)
    await gated.holding.wait()
    waiting = [_post(http, "a.jpg", 70), _post(http, "b.jpg", 80, key=KEY_B)]
    await _until(lambda: _context(app).registrations.waiting() == 1)  # tenant B's went at once
    gated.gate.set()
    answers = [await first, *await asyncio.gather(*waiting)]

    assert all(answer.status_code == 202 for answer in answers)
    for message in gated.messages:
        assert len({reports.jobs[job_id]["tenant_id"] for job_id in message}) == 1


async def test_with_chunks_of_one_every_request_is_registered_and_queued_alone(
    gated: GatedPublisher, reports: FakeReports
) -> None:
    application = create_app(make_settings(task_chunk_size=1), publisher=gated)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as http:
            first, answers = await _first_then_waiting(
                application, http, gated, [("b.jpg", 70), ("c.jpg", 80)]
            )

    assert [len(message) for message in gated.messages] == [1, 1, 1]
    assert [len(call) for call in reports.registration_calls] == [1, 1, 1]
    assert first.status_code == 202 and all(answer.status_code == 202 for answer in answers)
