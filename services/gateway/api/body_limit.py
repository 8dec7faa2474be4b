"""Pure-ASGI middleware: request ids, access log, metrics, the 500 fallback, body-size caps."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.api.errors import error_response
from services.gateway.api.metrics import Metrics

logger = logging.getLogger("services.gateway.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID_HEADER = "X-Request-ID"


def _state(scope: Scope) -> dict[str, object]:
    state = scope.setdefault("state", {})
    assert isinstance(state, dict)
    return state


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestContextMiddleware:
    """Give each request an id, log one JSON line when it ends, count it, and turn any
    exception nothing else handled into a 500 `internal` ErrorBody (logged with traceback)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        # A caller's id is kept only if it is safe to echo into logs and headers.
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = _state(scope)
        state["request_id"] = request_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error", extra={"request_id": request_id})
            if started:
                raise
            response = error_response(500, "internal", "internal error", request_id=request_id)
            self.metrics.errors.labels("internal").inc()
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - began
            route = _route_template(scope)
            method = str(scope.get("method", ""))
            self.metrics.observe_request(method, route, status, elapsed)
            # No query string (it may carry patient_ref) and no bodies: ids and timings only.
            logger.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 1),
                    "tenant_id": state.get("tenant_id"),
                },
            )


class BodyTooLargeError(HTTPException):
    """The request body passed its route's cap while it was being received."""

    error_code = "upload.too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, "the request body is larger than allowed")
        self.error_details = {"max_bytes": max_bytes}


class BodyLimitMiddleware:
    """Cap each request body while it streams in: refuse a too-large Content-Length at once,
    and stop a chunked body as soon as it passes the cap, so no upload is buffered unbounded."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(str(scope.get("path", "")))
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            request_id = _state(scope).get("request_id")
            response = error_response(
                413,
                BodyTooLargeError.error_code,
                "the request body is larger than allowed",
                details={"max_bytes": limit},
                request_id=request_id if isinstance(request_id, str) else None,
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        received = 0

        async def receive_capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, receive_capped, send)
