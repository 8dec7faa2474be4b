"""The Celery publisher, against kombu's in-memory broker: the message the worker will receive."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from kombu import Connection

from contracts.jobs import InferenceTask, StoredImage
from services.gateway.adapters.task_publisher import CeleryTaskPublisher, build_celery_app
from services.gateway.domain.errors import UpstreamUnavailableError


def _task(job_id: str = "0123456789abcdef0123456789abcdef") -> InferenceTask:
    return InferenceTask(
        job_id=job_id,
        tenant_id="tenant-a",
        request_id="req-42",
        image=StoredImage(media_type="image/jpeg", width=4, height=3, sha256="ab" * 32, data_b64="AAAA"),
        submitted_at=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
    )


@pytest.fixture
def memory_publisher() -> Iterator[CeleryTaskPublisher]:
    publisher = CeleryTaskPublisher(build_celery_app("memory://"))
    yield publisher
    publisher.close()


def _drain(queue: str = "inference") -> list[object]:
    with Connection("memory://") as connection:
        simple = connection.SimpleQueue(queue)
        messages = []
        while simple.qsize():
            message = simple.get(timeout=1)
            message.ack()
            messages.append(message)
        simple.close()
        return messages


async def test_task_is_sent_by_name_to_the_inference_queue_with_job_id_as_task_id(memory_publisher):
    _drain()
    await memory_publisher.publish(_task())

    [message] = _drain()
    assert message.headers["task"] == "inference.predict"
    assert message.headers["id"] == "0123456789abcdef0123456789abcdef"
    assert message.delivery_info["routing_key"] == "inference"


async def test_task_kwargs_are_the_inference_task_as_json(memory_publisher):
    _drain()
    await memory_publisher.publish(_task())

    [message] = _drain()
    args, kwargs, _ = message.decode()
    assert args == []
    assert InferenceTask.model_validate(kwargs["payload"]) == _task()


async def test_task_carries_the_request_id_header(memory_publisher):
    _drain()
    await memory_publisher.publish(_task())

    [message] = _drain()
    assert message.headers["request_id"] == "req-42"


async def test_ping_is_true_for_a_reachable_broker(memory_publisher):
    assert await memory_publisher.ping() is True


async def test_ping_is_false_for_an_unreachable_broker():
    publisher = CeleryTaskPublisher(build_celery_app("redis://127.0.0.1:1/0"))
    try:
        assert await publisher.ping() is False
    finally:
        publisher.close()


async def test_publish_to_an_unreachable_broker_raises_upstream_unavailable():
    publisher = CeleryTaskPublisher(build_celery_app("redis://127.0.0.1:1/0"))
    try:
        with pytest.raises(UpstreamUnavailableError):
            await publisher.publish(_task())
    finally:
        publisher.close()


def test_sqlite_broker_folder_is_created(tmp_path):
    url = f"sqla+sqlite:///{tmp_path}/var/celery-broker.db"

    build_celery_app(url)

    assert (tmp_path / "var").is_dir()
