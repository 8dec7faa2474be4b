"""Typed errors of the inference worker. The task retries TransientError and fails the job at
once on PermanentError, recording its `code` as the job's error_code."""

from __future__ import annotations

from typing import Any

from contracts.errors import DomainError


class TransientError(DomainError):
    """May succeed if tried again later (a peer is down, slow or overloaded)."""

    code, status = "upstream.unavailable", 503


class PermanentError(DomainError):
    """Will fail the same way every time: retrying only delays the verdict."""

    code, status = "task.failed", 422


class UpstreamUnavailableError(TransientError):
    """An internal service timed out, refused the connection or answered 5xx/429."""

    def __init__(self, service: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, {"service": service, **(details or {})})
        self.service = service
        self._extra = details

    def __reduce__(self) -> tuple[type[UpstreamUnavailableError], tuple[Any, ...]]:
        # Celery pickles a failing task's exception; keep every constructor argument.
        return type(self), (self.service, self.message, self._extra)


class UpstreamRejectedError(PermanentError):
    """An internal service refused the request with a 4xx; its error code is kept."""

    def __init__(self, service: str, status: int, code: str | None, message: str) -> None:
        super().__init__(message, {"service": service, "status": status})
        self.service = service
        self.status = status
        self.code = code or f"{service}.rejected"
        self._downstream_code = code

    def __reduce__(self) -> tuple[type[UpstreamRejectedError], tuple[Any, ...]]:
        # Celery pickles a failing task's exception; keep every constructor argument.
        return type(self), (self.service, self.status, self._downstream_code, self.message)


class PayloadInvalidError(PermanentError):
    """The task message is not a contracts.jobs.InferenceTask."""

    code, status = "task.payload_invalid", 422


class ImageCorruptError(PermanentError):
    """The stored image cannot be decoded."""

    code, status = "image.corrupt", 422


class ImageTooLargeError(PermanentError):
    """The stored image decodes to more pixels than Pillow's decompression-bomb limit."""

    code, status = "image.too_large", 413
