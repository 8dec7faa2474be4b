"""Who is calling, and a short-lived cache of API keys that reports has already verified."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the tenant every read and write is scoped to."""

    tenant_id: str
    key_id: str


def key_digest(api_key: str) -> str:
    """sha256 of the key: the cache never holds a key itself."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


class ApiKeyCache:
    """Positive verifications only, for `ttl_seconds`; a revoked key stays valid at most that long."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, api_key: str) -> Principal | None:
        """The cached principal, or None when absent or expired."""
        digest = key_digest(api_key)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires_at, principal = entry
        if self._clock() >= expires_at:
            del self._entries[digest]
            return None
        return principal

    def put(self, api_key: str, principal: Principal) -> None:
        """Remember a verified key; the oldest entry goes when full."""
        if self._ttl <= 0:
            return
        digest = key_digest(api_key)
        self._entries[digest] = (self._clock() + self._ttl, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
