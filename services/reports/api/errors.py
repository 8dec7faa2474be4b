"""The one exception-handler set: every error leaves as `contracts.errors.ErrorBody`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.errors import DomainError, ErrorBody, ErrorDetail

_HTTP_CODES = {
    404: "route.not_found",
    405: "request.method_not_allowed",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | list[Any] | None,
    request_id: str | None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON response holding an ErrorBody."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details, request_id=request_id))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _request_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return str(value) if value is not None else request.headers.get("x-request-id")


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(exc.status, exc.code, exc.message, exc.details, _request_id(request))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Locations and reasons only: the offending input may be an image or a patient reference.
    details = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type", "")}
        for error in exc.errors()
    ]
    return error_response(422, "request.invalid", "request is invalid", details, _request_id(request))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http.{exc.status_code}")
    return error_response(
        exc.status_code, code, str(exc.detail), None, _request_id(request), headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions are caught by RequestContextMiddleware."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
