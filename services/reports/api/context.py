"""Per-request context: request id, timing, one log line, and the last-resort 500."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.reports.api.errors import error_response

logger = logging.getLogger("services.reports.request")

REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128


def _header(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key.decode("latin-1").lower() == name:
            return str(value.decode("latin-1"))
    return None


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths are not logged verbatim: they may carry anything a caller typed.
    return str(path) if path else "<unmatched>"


class RequestContextMiddleware:
    """Assigns the request id, logs one line per request, and turns crashes into a 500 body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = (_header(scope, REQUEST_ID_HEADER) or "").strip()
        request_id = incoming[:_MAX_REQUEST_ID] if incoming else uuid.uuid4().hex
        # Mutate the scope's state in place, so handlers see the same request id.
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        extra: dict[str, Any] = {"request_id": request_id, "method": scope.get("method")}
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error", extra={**extra, "route": _route_template(scope)})
            if response_started:
                raise
            response = error_response(500, "internal", "internal error", None, request_id)
            await response(scope, receive, send_with_id)
        finally:
            extra.update(
                route=_route_template(scope),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                tenant_id=_header(scope, "x-tenant-id"),
            )
            logger.info("request", extra=extra)
