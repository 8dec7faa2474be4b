"""Who is calling (a tenant's user with a role, through one API key), what each role may do, and a
short-lived cache of API keys that reports has already verified."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from contracts.users import Actor, Role


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the tenant every read and write is scoped to, and the user (with
    their role) every write and audit entry names."""

    tenant_id: str
    key_id: str
    user_id: str
    user_name: str
    role: Role

    def actor(self, client_ip: str | None, user_agent: str | None) -> Actor:
        """Who is acting, as the reports service records it."""
        return Actor(
            user_id=self.user_id,
            user_name=self.user_name,
            role=self.role,
            key_id=self.key_id,
            client_ip=client_ip[:64] if client_ip else None,
            user_agent=user_agent[:256] if user_agent else None,
        )


# The caller of the request being served, set by authentication: the reports client sends it
# along (contracts.users.ACTOR_HEADER) on every call the request makes, so reports records who
# read or wrote what without every route passing it.
current_actor: ContextVar[Actor | None] = ContextVar("current_actor", default=None)


def key_digest(api_key: str) -> str:
    """sha256 of the key: the cache never holds a key itself."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


class ApiKeyCache:
    """Positive verifications only, for `ttl_seconds`. A key revoked (or a user disabled) through
    this gateway is forgotten at once; through another replica or the CLI it stays valid here at
    most `ttl_seconds`."""

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

    def forget_key(self, key_id: str) -> None:
        """Drop the cached verification of the key with this id (revoked: refused at once here)."""
        self._forget(lambda principal: principal.key_id == key_id)

    def forget_user(self, user_id: str) -> None:
        """Drop every cached key of this user (disabled: refused at once here)."""
        self._forget(lambda principal: principal.user_id == user_id)

    def _forget(self, matches: Callable[[Principal], bool]) -> None:
        # A scan of at most `max_entries`: only an admin's revocation or disabling comes here.
        for digest in [digest for digest, (_, principal) in self._entries.items() if matches(principal)]:
            del self._entries[digest]
