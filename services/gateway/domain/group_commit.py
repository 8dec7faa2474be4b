"""Group commit for concurrent single submissions (issue 9).

Each `POST /v1/images` used to cost one registration call to reports and one task message, which
the worker ran alone: three HTTP hops and one ONNX Runtime call per image. Under load many such
requests are in flight at once, so the gateway groups them the way a database groups commits:
a request whose key has nothing in flight goes at once, alone (a lone client waits for nobody);
requests that arrive while a group of their key is in flight wait for it to end and then go
together, as one registration and one `inference.predict_chunk` message (one micro-batch in the
worker). Closed-loop clients answered together come back together, so under steady load the
groups grow by themselves, up to `max_items`.

Under a backlog (`should_linger`: the broker holds waiting messages, so the workers are all busy
and a job sent now waits in the queue anyway) a group waits up to `linger_seconds` for more items
before it starts, as a Kafka producer's `linger.ms` does: the waiting moves from the broker's
queue into the group, and the group becomes one larger micro-batch. With no backlog nothing
lingers, so a lone client never waits for company.

Every item keeps its own outcome: a value or the exception its request raises. A request that
went away before its group started is left out of it (nothing is registered for it); one that
goes away later leaves its group running (its job is registered and queued all the same, as it
would be alone).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_KeyT = TypeVar("_KeyT", bound=Hashable)
_ItemT = TypeVar("_ItemT")
_ResultT = TypeVar("_ResultT")

logger = logging.getLogger(__name__)

# One outcome per item, in order: what its request returns, or the exception it raises.
GroupRunner = Callable[[list[_ItemT]], Awaitable[list[_ResultT | BaseException]]]


@dataclass
class _Entry(Generic[_ItemT, _ResultT]):
    item: _ItemT
    future: asyncio.Future[_ResultT]
    # The submitting request's context (request id, acting user): the group runs in its first
    # entry's, so the calls it makes carry that request's headers, as they would alone.
    context: contextvars.Context


@dataclass
class GroupCommit(Generic[_KeyT, _ItemT, _ResultT]):
    """Runs items of one key in groups of at most `max_items`, one group per key at a time.

    Items of different keys never share a group (the key is what a group's single call must have
    in common: the tenant and the acting user)."""

    run_group: GroupRunner[_ItemT, _ResultT]
    max_items: int
    linger_seconds: float = 0.0
    should_linger: Callable[[], bool] = lambda: False
    _pending: dict[_KeyT, deque[_Entry[_ItemT, _ResultT]]] = field(default_factory=dict)
    _running: set[_KeyT] = field(default_factory=set)
    _filled: dict[_KeyT, asyncio.Event] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def submit(self, key: _KeyT, item: _ItemT) -> _ResultT:
        """The item's outcome once its group has run (its exception raised here)."""
        entry: _Entry[_ItemT, _ResultT] = _Entry(
            item, asyncio.get_running_loop().create_future(), contextvars.copy_context()
        )
        queue = self._pending.setdefault(key, deque())
        queue.append(entry)
        if key not in self._running:
            self._running.add(key)
            self._start_next(key)
        elif len(queue) >= self._group_size() and (filled := self._filled.get(key)) is not None:
            filled.set()  # a lingering group is full: it need not wait any longer
        return await entry.future

    def waiting(self) -> int:
        """Items waiting for a group of theirs to start (all keys)."""
        return sum(len(queue) for queue in self._pending.values())

    def _group_size(self) -> int:
        return max(1, self.max_items)

    def _start_next(self, key: _KeyT) -> None:
        """Start the key's next group from what is pending, or mark the key idle."""
        queue = self._pending.get(key)
        while queue and queue[0].future.done():  # its request went away before its group started
            queue.popleft()
        if not queue:
            self._pending.pop(key, None)
            self._running.discard(key)
            return
        task = asyncio.create_task(self._run(key), context=queue[0].context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self, key: _KeyT) -> list[_Entry[_ItemT, _ResultT]]:
        """The key's next group: up to `max_items` pending entries whose requests still wait."""
        queue = self._pending.get(key)
        group: list[_Entry[_ItemT, _ResultT]] = []
        while queue and len(group) < self._group_size():
            entry = queue.popleft()
            if not entry.future.done():
                group.append(entry)
        return group

    async def _linger(self, key: _KeyT) -> None:
        """Under a backlog, wait up to `linger_seconds` for the group to fill."""
        queue = self._pending.get(key)
        if self.linger_seconds <= 0 or not queue or len(queue) >= self._group_size():
            return
        if not self.should_linger():
            return
        filled = self._filled[key] = asyncio.Event()
        try:
            await asyncio.wait_for(filled.wait(), self.linger_seconds)
        except TimeoutError:
            pass
        finally:
            self._filled.pop(key, None)

    async def _run(self, key: _KeyT) -> None:
        group: list[_Entry[_ItemT, _ResultT]] = []
        outcomes: list[_ResultT | BaseException] = []
        try:
            await self._linger(key)
            group = self._take(key)
            if group:
                outcomes = await self.run_group([entry.item for entry in group])
                if len(outcomes) != len(group):
                    raise RuntimeError(f"a group of {len(group)} answered {len(outcomes)} outcomes")
        except Exception as exc:  # the whole group failed alike (reports or the broker is down)
            outcomes = [exc] * len(group)
        except BaseException:  # cancelled (the process is stopping): no request waits forever
            for entry in group:
                entry.future.cancel()
            raise
        finally:
            self._start_next(key)
        for entry, outcome in zip(group, outcomes, strict=True):
            if entry.future.done():
                continue
            if isinstance(outcome, BaseException):
                entry.future.set_exception(outcome)
            else:
                entry.future.set_result(outcome)
