"""Queue `inference.predict` on Celery by name: the gateway never imports the inference package.

Messages (`contracts.tasks`), queue `inference`, header `request_id`:
- one job: task `inference.predict`, task id = job id, kwargs `{"payload": <InferenceTask>}`;
- several jobs of a batch: task `inference.predict_chunk`, a fresh task id, kwargs
  `{"payload": <InferenceChunk>}` (the broker's queue depth counts messages, so a chunk is one).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from celery import Celery
from pydantic import BaseModel

from contracts.jobs import InferenceChunk, InferenceTask
from contracts.tasks import (
    INFERENCE_CHUNK_TASK_NAME,
    INFERENCE_QUEUE,
    INFERENCE_TASK_NAME,
    PAYLOAD_KWARG,
    REQUEST_ID_TASK_HEADER,
)
from services.gateway.domain.errors import UpstreamUnavailableError

logger = logging.getLogger(__name__)

# A broker that is down must fail a request within seconds, not hang it on Celery's default
# retry schedule (which can wait for minutes).
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.5, "interval_max": 1.0}
_CONNECT_TIMEOUT_SECONDS = 3.0


class TaskPublisher(Protocol):
    """Where accepted jobs go. The Celery one is production; tests inject an in-memory one."""

    async def publish(self, task: InferenceTask) -> None:
        """Queue one inference task; raises `UpstreamUnavailableError` when the broker is down."""
        ...

    async def publish_many(self, tasks: list[InferenceTask]) -> None:
        """Queue several jobs of one tenant as ONE message (`inference.predict_chunk`), which the
        worker runs as one micro-batch; raises `UpstreamUnavailableError` when the broker is down."""
        ...

    async def ping(self) -> bool:
        """True when the broker accepts a connection."""
        ...

    async def queue_depth(self) -> int | None:
        """Messages waiting in the inference queue; None when the broker cannot say."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def build_celery_app(broker_url: str) -> Celery:
    """A producer-only Celery app: no result backend, JSON only."""
    _ensure_sqlite_dir(broker_url)
    app = Celery("skintriage-gateway", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_timeout=_CONNECT_TIMEOUT_SECONDS,
        broker_connection_retry_on_startup=False,
        broker_transport_options={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    )
    return app


class CeleryTaskPublisher:
    """`TaskPublisher` over a Celery app (the broker connection pool is Celery's)."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    @classmethod
    def from_broker_url(cls, broker_url: str) -> CeleryTaskPublisher:
        """Build the publisher for a broker URL (call once, in the app's lifespan)."""
        return cls(build_celery_app(broker_url))

    async def publish(self, task: InferenceTask) -> None:
        """Send the task (task id = job id)."""
        await self._publish(INFERENCE_TASK_NAME, task.job_id, task, [task])

    async def publish_many(self, tasks: list[InferenceTask]) -> None:
        """Send one chunk message (a fresh task id; each job keeps its own id inside)."""
        await self._publish(INFERENCE_CHUNK_TASK_NAME, uuid.uuid4().hex, InferenceChunk(tasks=tasks), tasks)

    async def _publish(self, name: str, task_id: str, body: BaseModel, tasks: list[InferenceTask]) -> None:
        """Send from a worker thread (kombu's producer is blocking); a broker that refuses is
        `UpstreamUnavailableError`."""
        try:
            await anyio.to_thread.run_sync(self._send, name, task_id, body, tasks[0].request_id)
        except Exception as exc:  # kombu raises OperationalError, OSError, socket timeouts, ...
            logger.warning(
                "task publish failed",
                extra={
                    "request_id": tasks[0].request_id,
                    "job_id": tasks[0].job_id,
                    "jobs": len(tasks),
                    "error": type(exc).__name__,
                },
            )
            raise UpstreamUnavailableError("the task queue is unavailable", {"dependency": "broker"}) from exc

    async def ping(self) -> bool:
        """True when a broker connection (and channel) can be opened."""
        try:
            await anyio.to_thread.run_sync(self._ping)
        except Exception as exc:
            logger.warning("broker ping failed", extra={"error": type(exc).__name__})
            return False
        return True

    async def queue_depth(self) -> int | None:
        """The inference queue's message count (Redis: the list's length; SQL broker: visible rows)."""
        try:
            return await anyio.to_thread.run_sync(self._queue_depth)
        except Exception as exc:
            logger.warning("queue depth unreadable", extra={"error": type(exc).__name__})
            return None

    def close(self) -> None:
        """Close the producer pool."""
        self._app.close()

    def _send(self, name: str, task_id: str, body: BaseModel, request_id: str | None) -> None:
        headers: dict[str, Any] = {REQUEST_ID_TASK_HEADER: request_id}
        self._app.send_task(
            name,
            kwargs={PAYLOAD_KWARG: body.model_dump(mode="json")},
            task_id=task_id,
            queue=INFERENCE_QUEUE,
            headers=headers,
            retry=True,
            retry_policy=_RETRY_POLICY,
        )

    def _queue_depth(self) -> int:
        with self._app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=_CONNECT_TIMEOUT_SECONDS)
            # A (non-passive) declare is idempotent and answers the count on every kombu
            # transport; a passive one fails on Redis while the queue's list is empty.
            declared = connection.default_channel.queue_declare(queue=INFERENCE_QUEUE, durable=True)
            return int(declared.message_count)

    def _ping(self) -> None:
        with self._app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=_CONNECT_TIMEOUT_SECONDS)
            _ = connection.default_channel


def _ensure_sqlite_dir(broker_url: str) -> None:
    """kombu's SQLAlchemy transport creates the SQLite file but not its folder (`var/`)."""
    prefix = "sqla+sqlite:///"
    if broker_url.startswith(prefix):
        path = broker_url[len(prefix) :].split("?", 1)[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
