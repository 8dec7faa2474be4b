"""Admission control: refuse new work before registering it, never drop work already accepted.

Two checks run before a job is registered with reports or queued, so a refused request leaves
nothing behind and a retry starts clean:

- a per-tenant token bucket (images per second with a burst) -> 429 `rate.limited`;
- the inference queue's depth (messages waiting in the broker) -> 503 `queue.full`.

Both answer `Retry-After`. The bucket lives in this gateway process: with N gateway replicas a
tenant's ceiling is N times the configured rate (documented in services/gateway/README.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.gateway.domain.errors import QueueFullError, RateLimitedError

Clock = Callable[[], float]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TenantRateLimiter:
    """Token buckets keyed by tenant: `rate` images per second, at most `burst` at once.

    `rate <= 0` disables the limit. A request for more images than the burst (a large batch)
    is charged the whole burst, so any batch the batch-size limit allows can pass."""

    def __init__(self, rate: float, burst: int, *, clock: Clock = time.monotonic, max_tenants: int = 10_000):
        self._rate = rate
        self._burst = max(1, burst)
        self._clock = clock
        self._max_tenants = max_tenants
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def acquire(self, tenant_id: str, images: int = 1) -> None:
        """Take `images` tokens for the tenant or raise `RateLimitedError` (taking none)."""
        if not self.enabled:
            return
        now = self._clock()
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            if len(self._buckets) >= self._max_tenants:
                # Full buckets carry no information: forgetting them never lets anyone exceed the rate.
                self._buckets = {t: b for t, b in self._buckets.items() if not self._is_full(b, now)}
            bucket = self._buckets[tenant_id] = _Bucket(tokens=float(self._burst), updated=now)
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        cost = float(min(images, self._burst))
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return
        wait = (cost - bucket.tokens) / self._rate
        retry_after = max(1, math.ceil(wait))
        raise RateLimitedError(
            "too many images for this tenant; retry later",
            {"rate_per_second": self._rate, "burst": self._burst, "retry_after_seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )

    def _is_full(self, bucket: _Bucket, now: float) -> bool:
        return bucket.tokens + (now - bucket.updated) * self._rate >= self._burst


class QueueDepthGuard:
    """Refuses new jobs while the broker's inference queue holds `max_depth` or more messages.

    The depth is read from the broker at most every `cache_seconds` (one round trip shared by
    the requests of that window), so the bound can be overshot by what arrives in one window.
    `max_depth <= 0` disables the check. A depth that cannot be read admits the request: the
    publish that follows fails with 503 `upstream.unavailable` if the broker is really down."""

    def __init__(
        self,
        read_depth: Callable[[], Awaitable[int | None]],
        max_depth: int,
        *,
        retry_after_seconds: int,
        cache_seconds: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._read_depth = read_depth
        self._max_depth = max_depth
        self._retry_after = retry_after_seconds
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._depth: int | None = None
        self._read_at = -math.inf
        self._broker_depth: int | None = None  # as last read, without what was admitted since

    def backlog(self) -> bool:
        """Whether the broker held waiting messages at the last read (no read of its own): the
        workers were all busy, so a job sent now would wait in the queue anyway."""
        return self._broker_depth is not None and self._broker_depth > 0

    async def check(self, incoming: int = 1) -> None:
        """Raise `QueueFullError` when the queue is at its bound."""
        if self._max_depth <= 0:
            return
        now = self._clock()
        if now - self._read_at >= self._cache_seconds:
            self._depth = self._broker_depth = await self._read_depth()
            self._read_at = now
        if self._depth is None or self._depth < self._max_depth:
            if self._depth is not None:
                # Count what this process admits inside the window, so a burst cannot overshoot.
                self._depth += incoming
            return
        raise QueueFullError(
            "the inference queue is full; retry later",
            {"queue_depth": self._depth, "max_queue_depth": self._max_depth},
            headers={"Retry-After": str(self._retry_after)},
        )
