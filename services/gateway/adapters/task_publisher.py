"""Queue inference tasks on Celery by name (`services.common.task_queue`): the gateway never
imports the inference package. The publisher runs the blocking producer in worker threads and
turns a broker that refuses into `UpstreamUnavailableError`.
"""

from __future__ import annotations

import logging
from typing import Protocol

import anyio.to_thread
from celery import Celery

from contracts.jobs import InferenceTask
from services.common.task_queue import TaskQueue, build_celery_app
from services.gateway.domain.errors import UpstreamUnavailableError

__all__ = ["CeleryTaskPublisher", "TaskPublisher", "build_celery_app"]

logger = logging.getLogger(__name__)


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


class CeleryTaskPublisher:
    """`TaskPublisher` over the shared `TaskQueue`."""

    def __init__(self, app: Celery) -> None:
        self.queue = TaskQueue(app)

    @classmethod
    def from_broker_url(cls, broker_url: str) -> CeleryTaskPublisher:
        """Build the publisher for a broker URL (call once, in the app's lifespan)."""
        return cls(build_celery_app(broker_url))

    async def publish(self, task: InferenceTask) -> None:
        """Send the task (task id = job id)."""
        await self._publish([task])

    async def publish_many(self, tasks: list[InferenceTask]) -> None:
        """Send one chunk message (a fresh task id; each job keeps its own id inside)."""
        await self._publish(tasks)

    async def _publish(self, tasks: list[InferenceTask]) -> None:
        """Send from a worker thread (kombu's producer is blocking); a broker that refuses is
        `UpstreamUnavailableError`."""
        try:
            await anyio.to_thread.run_sync(self.queue.send_tasks, tasks)
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
            await anyio.to_thread.run_sync(self.queue.ping)
        except Exception as exc:
            logger.warning("broker ping failed", extra={"error": type(exc).__name__})
            return False
        return True

    async def queue_depth(self) -> int | None:
        """The inference queue's message count (Redis: the list's length; SQL broker: visible rows)."""
        try:
            return await anyio.to_thread.run_sync(self.queue.depth)
        except Exception as exc:
            logger.warning("queue depth unreadable", extra={"error": type(exc).__name__})
            return None

    def close(self) -> None:
        """Close the producer pool."""
        self.queue.close()
