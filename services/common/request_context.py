"""The request-context middleware every service wraps its app in (pure ASGI).

For each HTTP request it: adopts a well-formed incoming `X-Request-ID` or makes one; keeps it in
`request.state.request_id` and binds it for logging (every log line of the request carries it);
echoes it in the response; logs one `request` line when the request ends (method, route template,
status, duration, tenant; never the raw path or query string, which may carry patient references);
and turns an exception nothing else handled into a 500 `internal` ErrorBody, logged with its
traceback. Routes forward the id downstream: `X-Request-ID` on HTTP calls, the task header.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import ErrorObserver, error_response
from services.common.request_id import REQUEST_ID_HEADER, STATE_KEY, accept_request_id, bound_request_id

UNMATCHED_ROUTE = "unmatched"
# request.state.received_at: time.perf_counter() when the request reached this service, for
# handlers that must know how long their caller has been waiting (`seconds_waiting`).
RECEIVED_AT_KEY = "received_at"


def seconds_waiting(state: object) -> float:
    """Seconds since the request with this `request.state` reached the service (0 outside the
    middleware)."""
    began = getattr(state, RECEIVED_AT_KEY, None)
    return time.perf_counter() - began if isinstance(began, float) else 0.0


class RequestObserver(ErrorObserver, Protocol):
    """Told about every finished request (the gateway's metrics)."""

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request finished with `status` after `seconds`."""
        ...


def route_template(scope: Scope) -> str:
    """The matched route's template (`/v1/jobs/{job_id}`); never the raw path, which may hold
    anything a caller typed."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Request id, one log line per request, and the last-resort 500 (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, service: str, observer: RequestObserver | None = None) -> None:
        self.app = app
        self.observer = observer
        self.logger = logging.getLogger(f"services.{service}.request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        began = time.perf_counter()
        state = scope.setdefault("state", {})
        state[STATE_KEY] = request_id
        state[RECEIVED_AT_KEY] = began
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with bound_request_id(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                self.logger.exception(
                    "unhandled error", extra={"request_id": request_id, "route": route_template(scope)}
                )
                if started:
                    raise
                if self.observer is not None:
                    self.observer.error_rendered("internal")
                response = error_response(500, "internal", "internal error", request_id=request_id)
                await response(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - began
                route = route_template(scope)
                method = str(scope.get("method", ""))
                if self.observer is not None:
                    self.observer.request_done(method, route, status, elapsed)
                self.logger.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        # Set by the route's auth dependency once the tenant is known to exist.
                        "tenant_id": state.get("tenant_id"),
                    },
                )
