"""A batch's new jobs are queued in chunks (`inference.predict_chunk`), each one worker micro-batch:
every job exactly once, in order, one tenant per message; a broker that refuses a chunk fails
exactly that chunk's jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from contracts.jobs import InferenceTask, StoredImage
from services.gateway.api.app import create_app
from services.gateway.api.routes.batches import registration_groups
from services.gateway.api.submission import chunks
from services.gateway.domain.batch import PreparedItem
from tests.gateway import samples
from tests.gateway.conftest import make_settings
from tests.gateway.fakes import KEY_A, TENANT_A, FakeReports, InMemoryPublisher


def _files(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"img-{i}.jpg", samples.jpeg(size=(64 + i, 48)), "image/jpeg")) for i in range(count)]


@pytest.fixture
async def chunked(publisher: InMemoryPublisher, reports: FakeReports) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with batches of up to 12 images queued 5 jobs per message."""
    app = create_app(make_settings(max_batch_items=12, task_chunk_size=5), publisher=publisher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {KEY_A}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as http:
            yield http


async def test_a_batch_is_queued_in_even_chunks_with_every_job_once(
    chunked: httpx.AsyncClient, publisher: InMemoryPublisher
) -> None:
    response = await chunked.post("/v1/batches", files=_files(12))

    assert response.status_code == 202
    items = response.json()["items"]
    assert [len(message) for message in publisher.messages] == [4, 4, 4]  # 12 at <= 5: 4 + 4 + 4
    queued = [job_id for message in publisher.messages for job_id in message]
    assert queued == [item["job_id"] for item in sorted(items, key=lambda i: i["index"])]
    assert {task.tenant_id for task in publisher.tasks} == {TENANT_A}


async def test_a_single_image_is_one_message_of_one_job(
    chunked: httpx.AsyncClient, publisher: InMemoryPublisher
) -> None:
    response = await chunked.post("/v1/images", files={"file": ("one.jpg", samples.jpeg(), "image/jpeg")})

    assert response.status_code in (200, 202)
    assert publisher.messages == [[response.json()["job_id"]]]


async def test_a_refused_chunk_fails_its_jobs_and_the_answer_says_so(
    chunked: httpx.AsyncClient, publisher: InMemoryPublisher, reports: FakeReports
) -> None:
    publisher.down = True

    response = await chunked.post("/v1/batches", files=_files(7))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream.unavailable"
    assert sorted(reports.failed_jobs) == sorted(reports.jobs)  # nothing left `queued` unseen
    assert len(reports.jobs) == 7


def _task(i: int) -> InferenceTask:
    image = StoredImage(media_type="image/png", width=1, height=1, sha256="0" * 64, data_b64="AA==")
    return InferenceTask(
        job_id=f"j{i}", tenant_id="t", image=image, submitted_at=datetime(2026, 1, 1, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [(1, 8, [1]), (8, 8, [8]), (9, 8, [5, 4]), (33, 16, [11, 11, 11]), (5, 1, [1, 1, 1, 1, 1]), (0, 8, [])],
)
def test_chunks_cut_evenly_in_order(count: int, size: int, expected: list[int]) -> None:
    tasks = [_task(i) for i in range(count)]
    cut = chunks(tasks, size)
    assert [len(c) for c in cut] == expected
    assert [t for c in cut for t in c] == tasks


def _item(index: int, size: int) -> PreparedItem:
    image = StoredImage(media_type="image/png", width=1, height=1, sha256="0" * 64, data_b64="A" * size)
    return PreparedItem(index=index, filename=f"{index}.png", image=image, error=None)


def test_registration_groups_are_even_and_bounded_in_bytes() -> None:
    items = [_item(i, 100) for i in range(9)]
    assert [len(g) for g in registration_groups(items, 8, 10_000)] == [5, 4]
    # 5 items of 100 bytes under a 250-byte bound: 2 + 2 + 1, then 2 + 2.
    assert [len(g) for g in registration_groups(items, 8, 250)] == [2, 2, 1, 2, 2]
    assert [i.index for g in registration_groups(items, 8, 250) for i in g] == list(range(9))
    assert [len(g) for g in registration_groups([_item(0, 999)], 8, 10)] == [1]  # never empty
