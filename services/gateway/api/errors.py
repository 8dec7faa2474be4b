"""The gateway's one set of error handlers: every error leaves as `contracts.errors.ErrorBody`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from contracts.errors import DomainError, ErrorBody, ErrorDetail

_HTTP_CODES = {
    400: "request.malformed",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "upload.too_large",
    415: "request.unsupported_media_type",
}
_STATUS_TEXT = {
    400: "Bad request",
    401: "Authentication failed",
    404: "Not found",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid request",
    500: "Internal error",
    503: "A dependency is unavailable",
}


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | list[Any] | None = None,
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Render the one error shape."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details, request_id=request_id))
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", 'Bearer realm="skintriage"')
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=all_headers)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for error statuses, all documented as `ErrorBody`."""
    return {
        status: {"model": ErrorBody, "description": _STATUS_TEXT.get(status, "Error")} for status in statuses
    }


def validation_details(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """Field locations and messages of pydantic errors, without the rejected input (may be PHI)."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in errors
    ]


def request_id_of(request: Request) -> str | None:
    """The id the request-context middleware gave this request."""
    value = getattr(request.state, "request_id", None)
    return value if isinstance(value, str) else None


def _record(request: Request, code: str) -> None:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()


async def _on_domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    _record(request, exc.code)
    return error_response(
        exc.status, exc.code, exc.message, details=exc.details, request_id=request_id_of(request)
    )


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    _record(request, "request.invalid")
    return error_response(
        422,
        "request.invalid",
        "the request is invalid",
        details=validation_details(exc.errors()),
        request_id=request_id_of(request),
    )


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "error_code", None) or _HTTP_CODES.get(exc.status_code, f"http.{exc.status_code}")
    _record(request, code)
    details = getattr(exc, "error_details", None)
    return error_response(
        exc.status_code,
        code,
        str(exc.detail),
        details=details,
        request_id=request_id_of(request),
        headers=exc.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions are rendered by the request middleware."""
    app.add_exception_handler(DomainError, _on_domain_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
