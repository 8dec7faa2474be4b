"""The one error shape every service returns: {"error": {code, message, details, request_id}}."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    """Machine-readable `code` (e.g. `image.too_large`), human message, optional details."""

    code: str = Field(examples=["image.too_large"])
    message: str
    details: dict[str, Any] | list[Any] | None = None
    request_id: str | None = None


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx response."""

    error: ErrorDetail


class DomainError(Exception):
    """Base for typed domain errors; subclasses set `code` and `status`."""

    code: str = "internal"
    status: int = 500

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | list[Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Response headers the error implies (e.g. `Retry-After` on 429/503).
        self.headers = dict(headers or {})


def error_detail(exc: DomainError) -> ErrorDetail:
    """The error as it travels inside a body (an item of a batch answer) rather than as the answer."""
    return ErrorDetail(code=exc.code, message=exc.message, details=exc.details)
