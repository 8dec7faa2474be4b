"""The request-id rules every service and the worker follow (standard library only, so the
worker's domain-free task code can use them without a web framework)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeGuard

REQUEST_ID_HEADER = "X-Request-ID"
# Where the request-context middleware keeps the id in the ASGI scope (`request.state.request_id`).
STATE_KEY = "request_id"

# Only ids that are safe to echo into log lines and headers are adopted: no spaces, quotes or
# control characters (`fullmatch`, so not even a trailing newline), at most 128 characters.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    """A fresh id: 32 hex characters."""
    return uuid.uuid4().hex


def is_well_formed(value: object) -> TypeGuard[str]:
    """True when `value` may be adopted as a request id."""
    return isinstance(value, str) and _WELL_FORMED.fullmatch(value) is not None


def accept_request_id(incoming: str | None) -> str:
    """The caller's id when it is well formed, otherwise a new one."""
    return incoming if incoming is not None and is_well_formed(incoming) else new_request_id()


def current_request_id() -> str | None:
    """The id bound to the request or task being handled now (every log line carries it)."""
    return _current.get()


@contextmanager
def bound_request_id(request_id: str) -> Iterator[None]:
    """Bind `request_id` for the code run inside the block (a request, a task)."""
    token = _current.set(request_id)
    try:
        yield
    finally:
        _current.reset(token)


def request_id_of(scope: Mapping[str, Any]) -> str | None:
    """The id the request-context middleware stored in an ASGI scope, if any."""
    state = scope.get("state")
    value = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    return value if isinstance(value, str) else None
