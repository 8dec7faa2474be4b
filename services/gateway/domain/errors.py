"""Every error the gateway raises itself, each with its machine code and HTTP status."""

from __future__ import annotations

from typing import Any

from contracts.errors import DomainError
from services.common.errors import DEPENDENCY_RETRY_AFTER_SECONDS

# -- uploads -----------------------------------------------------------------------------------


class UploadTooLargeError(DomainError):
    code, status = "upload.too_large", 413


class EmptyImageError(DomainError):
    code, status = "image.empty", 400


class UnsupportedFormatError(DomainError):
    code, status = "image.unsupported_format", 415


class AnimatedImageError(DomainError):
    code, status = "image.animated", 415


class UnsupportedColorModeError(DomainError):
    code, status = "image.unsupported_color_mode", 415


class UnsupportedBitDepthError(DomainError):
    code, status = "image.unsupported_bit_depth", 415


class TooManyPixelsError(DomainError):
    code, status = "image.too_many_pixels", 413


class ImageTooSmallError(DomainError):
    code, status = "image.too_small", 422


class CorruptImageError(DomainError):
    code, status = "image.corrupt", 422


# -- batches and archives ----------------------------------------------------------------------


class BatchEmptyError(DomainError):
    code, status = "batch.empty", 422


class BatchTooManyItemsError(DomainError):
    code, status = "batch.too_many_items", 413


class BatchNoValidItemsError(DomainError):
    code, status = "batch.no_valid_items", 422


class ArchiveCorruptError(DomainError):
    code, status = "archive.corrupt", 422


class ArchiveTooManyEntriesError(DomainError):
    code, status = "archive.too_many_entries", 413


class ArchiveTooLargeError(DomainError):
    code, status = "archive.too_large", 413


class ArchiveEntryUnreadableError(DomainError):
    code, status = "archive.entry_unreadable", 422


# -- auth -------------------------------------------------------------------------------------


class ForbiddenRoleError(DomainError):
    """The caller is known but their role may not do this (contracts.users.Role)."""

    code, status = "auth.forbidden", 403


class MissingApiKeyError(DomainError):
    code, status = "auth.missing_api_key", 401


class InvalidApiKeyError(DomainError):
    code, status = "auth.invalid_api_key", 401


# -- dependencies ------------------------------------------------------------------------------


class UpstreamUnavailableError(DomainError):
    """A dependency timed out, refused the connection or answered 502/503/504: like every outage
    answer, it tells the client when to come back (`Retry-After`)."""

    code, status = "upstream.unavailable", 503

    def __init__(self, message: str, details: dict[str, Any] | list[Any] | None = None) -> None:
        super().__init__(message, details, headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)})


class UpstreamError(DomainError):
    """An error answered by reports, passed through with its own status and code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | list[Any] | None = None,
    ) -> None:
        super().__init__(message, details)
        self.status = status
        self.code = code


# -- overload ----------------------------------------------------------------------------------


class QueueFullError(DomainError):
    """The inference queue holds as many jobs as configured: nothing was registered or queued."""

    code, status = "queue.full", 503


class RateLimitedError(DomainError):
    """The tenant sent images faster than its rate limit: nothing was registered or queued."""

    code, status = "rate.limited", 429
