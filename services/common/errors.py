"""The one set of error handlers: every error leaves a service as `contracts.errors.ErrorBody`,
`{"error": {"code", "message", "details", "request_id"}}`.

- `contracts.errors.DomainError` (typed, with `code` and `status`) -> its status and code;
- request validation -> 422 `request.invalid` with field locations, never the rejected input;
- Starlette/FastAPI HTTP errors (unknown route, wrong method, ...) -> a code from a small table;
- anything unexpected -> 500 `internal`, rendered by `RequestContextMiddleware`, which logs the
  traceback and puts no internals in the body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from contracts.errors import DomainError, ErrorBody, ErrorDetail
from services.common.request_id import request_id_of

logger = logging.getLogger("services.common.errors")

# Codes for the HTTP errors the framework raises itself; a service may rename some (the gateway
# keeps its public names). Any other status becomes `http.<status>`.
HTTP_ERROR_CODES: Mapping[int, str] = {
    400: "request.malformed",
    404: "route.not_found",
    405: "route.method_not_allowed",
    406: "request.not_acceptable",
    415: "request.unsupported_media_type",
}
_STATUS_TEXT = {
    400: "Bad request",
    401: "Authentication failed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Rate limited (see `Retry-After`)",
    500: "Internal error",
    503: "A dependency is unavailable or the queue is full (see `Retry-After` when sent)",
}

Details = dict[str, Any] | list[Any] | None


def allowed_methods(request: Request) -> str:
    """Every method the request's path takes. Starlette answers a 405 with the methods of the
    first route whose path matched, but one path may have a route per method (`GET` and `POST
    /v1/webhooks`): `Allow` must list them all."""
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


def _leaf_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The routes themselves: FastAPI keeps an included router as one entry (`original_router`)."""
    for route in routes:
        included = getattr(getattr(route, "original_router", None), "routes", None)
        if included is not None:
            yield from _leaf_routes(included)
        else:
            yield route


class RequestInvalidError(DomainError):
    """The request breaks a rule its schema cannot express (the same code as a schema failure)."""

    code, status = "request.invalid", 422


class DependencyUnavailableError(DomainError):
    """Something this service needs (its database, say) is down or hung: retry later."""

    code, status = "dependency.unavailable", 503


# What a 503 `dependency.unavailable` asks a client to wait before retrying.
DEPENDENCY_RETRY_AFTER_SECONDS = 5


class ErrorObserver(Protocol):
    """Told the code of every error response a handler renders (the gateway counts them)."""

    def error_rendered(self, code: str) -> None:
        """One error response with `code` is being sent."""
        ...


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: Details = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Render the one error shape."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details, request_id=request_id))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=dict(headers or {}))


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for error statuses, all documented as `ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": _STATUS_TEXT.get(status, "Error")} for status in statuses
    }


def validation_details(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """Field locations and reasons of pydantic errors, without the rejected input (`input` may be
    an image or a patient reference, `ctx` may hold exception objects)."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]


def install_error_handlers(
    app: FastAPI,
    *,
    http_codes: Mapping[int, str] | None = None,
    challenge: str | None = None,
    observer: ErrorObserver | None = None,
    unavailable: Mapping[type[Exception], str] | None = None,
) -> None:
    """Register the handlers on `app`. `http_codes` renames codes of HTTP errors; `challenge` is
    the `WWW-Authenticate` value sent with every 401; `observer` hears every code rendered;
    `unavailable` maps exception types that mean "a dependency is down" (a database that refuses
    connections, say) to the dependency's name: they answer 503 `dependency.unavailable` with
    `Retry-After`, never 500."""
    codes = {**HTTP_ERROR_CODES, **(http_codes or {})}

    def respond(
        request: Request,
        status: int,
        code: str,
        message: str,
        details: Details,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if observer is not None:
            observer.error_rendered(code)
        all_headers = dict(headers or {})
        if status == 401 and challenge is not None:
            all_headers.setdefault("WWW-Authenticate", challenge)
        return error_response(
            status,
            code,
            message,
            details=details,
            request_id=request_id_of(request.scope),
            headers=all_headers,
        )

    async def on_domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return respond(request, exc.status, exc.code, exc.message, exc.details, exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        details = validation_details(exc.errors())
        return respond(request, 422, RequestInvalidError.code, "the request is invalid", details)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # An HTTPException may carry its own code (the gateway's body-size cap does).
        code = getattr(exc, "error_code", None) or codes.get(exc.status_code, f"http.{exc.status_code}")
        details = getattr(exc, "error_details", None)
        headers = exc.headers
        if exc.status_code == 405 and (allow := allowed_methods(request)):
            headers = {**(headers or {}), "Allow": allow}
        return respond(request, exc.status_code, code, str(exc.detail), details, headers)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        names = unavailable or {}
        dependency = next((name for kind, name in names.items() if isinstance(exc, kind)), "dependency")
        logger.warning(
            "dependency unavailable",
            extra={
                "request_id": request_id_of(request.scope),
                "dependency": dependency,
                "error": type(exc).__name__,
            },
        )
        return respond(
            request,
            DependencyUnavailableError.status,
            DependencyUnavailableError.code,
            f"{dependency} is unavailable; retry later",
            {"dependency": dependency},
            {"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
        )

    for kind in unavailable or {}:
        app.add_exception_handler(kind, on_unavailable)
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
