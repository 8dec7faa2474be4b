"""Pure-ASGI body-size caps: a too-large body is refused while it streams in, never buffered."""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.common.errors import error_response
from services.common.request_id import request_id_of


class BodyTooLargeError(HTTPException):
    """The request body passed its route's cap while it was being received. An HTTPException,
    not a DomainError: FastAPI re-raises those from body parsing instead of turning them into 400."""

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
            response = error_response(
                413,
                BodyTooLargeError.error_code,
                "the request body is larger than allowed",
                details={"max_bytes": limit},
                request_id=request_id_of(scope),
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
