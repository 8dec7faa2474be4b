"""Turn the files of a batch upload (or the entries of a zip) into prepared items.

Each item ends up either with a `StoredImage` or with the error that rejected it, so nothing is
dropped silently. Errors about the batch as a whole (too many items, a zip bomb) raise instead.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from contracts.errors import DomainError
from contracts.jobs import StoredImage
from services.gateway.domain.archive import ArchiveLimits, ImageArchive
from services.gateway.domain.errors import (
    ArchiveTooLargeError,
    BatchEmptyError,
    BatchTooManyItemsError,
    UploadTooLargeError,
)
from services.gateway.domain.upload_validation import ImageLimits, is_zip, prepare_image

_MAX_FILENAME = 255


@dataclass(frozen=True)
class BatchLimits:
    """Caps on one batch upload."""

    max_items: int
    max_archive_entries: int
    max_archive_uncompressed_bytes: int
    image: ImageLimits


@dataclass(frozen=True)
class PreparedItem:
    """One file of a batch: exactly one of `image` and `error` is set."""

    index: int
    filename: str | None
    image: StoredImage | None = None
    error: DomainError | None = None


def clean_filename(name: str | None) -> str | None:
    """The base name without directories or control characters, at most 255 characters."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return printable[:_MAX_FILENAME] or None


def read_bounded(stream: BinaryIO, max_bytes: int) -> bytes:
    """Read a whole file but never more than `max_bytes` (+1 to detect the overflow)."""
    stream.seek(0)
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UploadTooLargeError("the file is larger than allowed", {"max_bytes": max_bytes})
    return data


def prepare_files(files: Sequence[tuple[str | None, BinaryIO]], limits: BatchLimits) -> list[PreparedItem]:
    """Validate each uploaded file on its own."""
    if not files:
        raise BatchEmptyError("the batch holds no files")
    if len(files) > limits.max_items:
        raise BatchTooManyItemsError(
            "the batch holds more files than allowed", {"max_items": limits.max_items}
        )
    items = []
    for index, (name, stream) in enumerate(files):
        filename = clean_filename(name)
        try:
            data = read_bounded(stream, limits.image.max_upload_bytes)
            items.append(PreparedItem(index, filename, image=prepare_image(data, limits.image)))
        except DomainError as exc:
            items.append(PreparedItem(index, filename, error=exc))
    return items


def prepare_archive(stream: BinaryIO, limits: BatchLimits) -> list[PreparedItem]:
    """Validate each kept entry of a zip archive on its own."""
    archive_limits = ArchiveLimits(
        max_entries=limits.max_archive_entries,
        max_items=limits.max_items,
        max_uncompressed_bytes=limits.max_archive_uncompressed_bytes,
        max_entry_bytes=limits.image.max_upload_bytes,
    )
    items = []
    with ImageArchive.open(stream, archive_limits) as archive:
        for index, info in enumerate(archive.members):
            filename = clean_filename(info.filename)
            try:
                data = archive.read(info)
            except ArchiveTooLargeError:
                raise  # the archive as a whole inflates past its cap: reject the batch
            except DomainError as exc:
                items.append(PreparedItem(index, filename, error=exc))
                continue
            try:
                items.append(PreparedItem(index, filename, image=prepare_image(data, limits.image)))
            except DomainError as exc:
                items.append(PreparedItem(index, filename, error=exc))
    return items


def prepare_batch(
    files: Sequence[tuple[str | None, BinaryIO]], archive: BinaryIO | None, limits: BatchLimits
) -> list[PreparedItem]:
    """A zip (the `archive` part, or a lone file that is a zip) or the files themselves."""
    if archive is not None:
        return prepare_archive(archive, limits)
    if len(files) == 1 and _starts_like_zip(files[0][1]):
        return prepare_archive(files[0][1], limits)
    return prepare_files(files, limits)


def _starts_like_zip(stream: BinaryIO) -> bool:
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    return is_zip(head)
