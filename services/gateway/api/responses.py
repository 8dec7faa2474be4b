"""The OpenAPI `responses` of the public routes, written once: the error statuses every route shares,
those every route behind an API key shares, and the response headers that come with them.

A route names only what is its own (`404` for a job that does not exist, `415` for an upload that
is not an image); `open_route` and `api_key_route` add the rest, so a status that a middleware or a
dependency answers on every route is never missing from one of them. Every error is the shared
`contracts.errors.ErrorBody` (`services.common.errors.error_responses`).
"""

from __future__ import annotations

from typing import Any

from services.common.errors import error_responses

Responses = dict[int | str, dict[str, Any]]

# Any route: a body over the route's cap (`api/body_limit.py`, 64 KiB where no upload is expected)
# -> 413 `upload.too_large`; a bug -> 500 `internal`, with no internals in the body.
_EVERY_ROUTE = (413, 500)
# Behind an API key: a missing or unknown key (401), a parameter the schema refuses (422), and
# reports (which checks every key) answering garbage (502 `upstream.invalid_response`) or being
# unreachable or down (503 `upstream.unavailable`, `dependency.unavailable`).
_API_KEY_ROUTE = (401, 422, 502, 503)

_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {
        "WWW-Authenticate": {
            "description": 'The challenge: `Bearer realm="skintriage"`',
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds until the tenant's rate allows this request",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying, when the outage says (`queue.full`, "
            "`dependency.unavailable`)",
            "required": False,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}

# Images of patients and clinical documents: never kept by a shared cache, never sniffed into
# something executable.
PRIVATE_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}

# The headers of an accepted submission (`POST /v1/images`, `POST /v1/batches`).
SUBMITTED_HEADERS = {
    "Location": {
        "description": "The `status_url` of what was accepted",
        "required": True,
        "schema": {"type": "string"},
    },
    "Idempotent-Replay": {
        "description": "`true` when an `Idempotency-Key` repeated an earlier request (nothing new queued)",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def open_route(*statuses: int) -> Responses:
    """The error responses of a route that takes no API key: `statuses` and those of every route."""
    return _errors(*statuses, *_EVERY_ROUTE)


def api_key_route(*statuses: int) -> Responses:
    """The error responses of a route behind an API key: `statuses`, those of every key-checked
    route and those of every route."""
    return _errors(*statuses, *_API_KEY_ROUTE, *_EVERY_ROUTE)


def _errors(*statuses: int) -> Responses:
    responses = error_responses(*sorted(set(statuses)))
    for status, entry in responses.items():
        if isinstance(status, int) and status in _HEADERS:
            entry["headers"] = _HEADERS[status]
    return responses
