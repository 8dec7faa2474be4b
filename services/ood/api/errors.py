"""Every error rendered as contracts.errors.ErrorBody: {"error": {code, message, details, request_id}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from contracts.errors import DomainError, ErrorBody, ErrorDetail
from services.ood.api.middleware import request_id_of

log = logging.getLogger("services.ood.errors")

_HTTP_CODES = {404: "route.not_found", 405: "route.method_not_allowed"}


class InternalTokenInvalidError(DomainError):
    """Missing or wrong X-Internal-Token: only SkinTriage's own services may call."""

    code, status = "auth.internal_token_invalid", 401


class NotReadyError(DomainError):
    """The bundle is not loaded (yet)."""

    code, status = "service.not_ready", 503


def error_response(
    request: Request, status: int, code: str, message: str, details: dict[str, Any] | list[Any] | None = None
) -> JSONResponse:
    """The one error body, with the request id."""
    body = ErrorBody(
        error=ErrorDetail(
            code=code, message=message, details=details, request_id=request_id_of(request.scope)
        )
    )
    return JSONResponse(body.model_dump(), status_code=status)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return error_response(request, exc.status, exc.code, exc.message, exc.details)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only locations and kinds: `input` may echo a whole body and `ctx` may hold exception objects.
    details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return error_response(request, 422, "request.invalid", "the request does not match the schema", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(
        request, exc.status_code, _HTTP_CODES.get(exc.status_code, "http.error"), str(exc.detail)
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "request.failed",
        exc_info=exc,
        extra={"path_template": getattr(request.scope.get("route"), "path", None)},
    )
    return error_response(request, 500, "internal", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an ErrorBody."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
