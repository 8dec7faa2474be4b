"""Wakes `Prefer: wait` requests when their job finishes: one Redis subscription per gateway process
to `contracts.notifications.JOB_FINISHED_CHANNEL`, fanned out in memory to the requests waiting on
each job. With a broker without pub/sub (the embedded SQLite one) `StatusPoller` asks reports for
the statuses of every waited job of a tenant in one call per tick instead."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from contracts.notifications import JOB_FINISHED_CHANNEL, JobFinished, notifies_over

logger = logging.getLogger(__name__)
_RECONNECT_FIRST_S, _RECONNECT_MAX_S = 0.5, 10.0


@dataclass
class Waiter:
    """One waiting request: `event` is set when its job's notification arrives, `message` holds
    that notification."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    message: JobFinished | None = None


class Waiters:
    """The requests waiting on each job of this process, and the tenant each job belongs to."""

    def __init__(self) -> None:
        self._waiters: dict[str, list[Waiter]] = {}
        self._tenants: dict[str, str] = {}
        self.connected = False

    @contextlib.contextmanager
    def waiting(self, job_id: str, tenant_id: str) -> Iterator[Waiter]:
        """A waiter woken when `job_id`'s notification arrives, for the duration of the block."""
        waiter = Waiter()
        self._waiters.setdefault(job_id, []).append(waiter)
        self._tenants[job_id] = tenant_id
        self._on_wait()
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[job_id]
                    self._tenants.pop(job_id, None)

    async def start(self) -> None:
        """Start watching for finished jobs."""

    async def close(self) -> None:
        """Stop watching."""

    def _on_wait(self) -> None:
        """A request started waiting (the poller wakes up)."""

    def waited_by_tenant(self) -> dict[str, list[str]]:
        """tenant -> the jobs of it that requests wait on now."""
        by_tenant: dict[str, list[str]] = {}
        for job_id, tenant_id in self._tenants.items():
            by_tenant.setdefault(tenant_id, []).append(job_id)
        return by_tenant

    def wake(self, message: JobFinished) -> None:
        """Wake every waiter of the job `message` names."""
        for waiter in self._waiters.get(message.job_id, ()):
            waiter.message = message
            waiter.event.set()


class FinishListener(Waiters):
    """Subscribes in the background (`start`), reconnecting with backoff after a lost connection;
    `connected` says whether notifications are arriving now (waiters fall back to polling if not)."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._redis = aioredis.Redis.from_url(url)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self, ready_timeout_s: float = 2.0) -> None:
        """Start listening; waits briefly for the subscription so the first requests use it."""
        self._task = asyncio.create_task(self._run(), name="finish-listener")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), ready_timeout_s)

    async def close(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()

    def deliver(self, data: bytes | str) -> None:
        """Wake every waiter of the job a message names (malformed messages are ignored)."""
        try:
            message = JobFinished.model_validate_json(data)
        except ValidationError:
            logger.warning("job-finished message ignored: not a JobFinished")
            return
        self.wake(message)

    async def _run(self) -> None:
        delay = _RECONNECT_FIRST_S
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(JOB_FINISHED_CHANNEL)
                self.connected, delay = True, _RECONNECT_FIRST_S
                self._subscribed.set()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.deliver(message["data"])
            except (RedisError, OSError) as exc:
                logger.warning("job-finished subscription lost", extra={"error": type(exc).__name__})
            finally:
                self.connected = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)


def finish_listener(broker_url: str) -> FinishListener | None:
    """The listener for a Redis broker; None for one without pub/sub."""
    return FinishListener(broker_url) if notifies_over(broker_url) else None
