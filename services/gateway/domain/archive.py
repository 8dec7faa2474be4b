"""Read image entries out of an uploaded zip without letting it become a zip bomb.

Limits are checked on the central directory before anything is inflated (entry count, declared
sizes), and again on the bytes actually inflated (each entry is read with a bound).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from services.gateway.domain.errors import (
    ArchiveCorruptError,
    ArchiveEntryUnreadableError,
    ArchiveTooLargeError,
    ArchiveTooManyEntriesError,
    BatchEmptyError,
    BatchTooManyItemsError,
    UploadTooLargeError,
)

_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 65_535
_ZIP64_ENTRY_MARKER = 0xFFFF
_ENCRYPTED_FLAG = 0x1


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on one uploaded archive."""

    max_entries: int  # every entry, directories and junk included
    max_items: int  # image entries kept after filtering
    max_uncompressed_bytes: int  # all kept entries together
    max_entry_bytes: int  # one kept entry


def is_junk(name: str) -> bool:
    """Directories' leftovers that are not uploads: macOS resource forks and dotfiles."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    return not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


class ImageArchive:
    """An opened zip whose kept entries are within the limits; read them one at a time."""

    def __init__(self, zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], limits: ArchiveLimits):
        self._zf = zf
        self.members = members
        self._limits = limits
        self._inflated = 0

    @classmethod
    def open(cls, stream: BinaryIO, limits: ArchiveLimits) -> ImageArchive:
        """Open and check the central directory; raises a DomainError for the whole archive."""
        declared_entries = _declared_entry_count(stream)
        if declared_entries > limits.max_entries:
            raise ArchiveTooManyEntriesError(
                "the archive has too many entries", {"max_entries": limits.max_entries}
            )
        try:
            zf = zipfile.ZipFile(stream)
            infos = zf.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise ArchiveCorruptError("the archive could not be read") from exc
        if len(infos) > limits.max_entries:
            zf.close()
            raise ArchiveTooManyEntriesError(
                "the archive has too many entries", {"max_entries": limits.max_entries}
            )
        members = [i for i in infos if not i.is_dir() and not is_junk(i.filename)]
        try:
            if not members:
                raise BatchEmptyError("the archive holds no files")
            if len(members) > limits.max_items:
                raise BatchTooManyItemsError(
                    "the archive holds more files than a batch may", {"max_items": limits.max_items}
                )
            if sum(i.file_size for i in members) > limits.max_uncompressed_bytes:
                raise ArchiveTooLargeError(
                    "the archive inflates to more than allowed",
                    {"max_uncompressed_bytes": limits.max_uncompressed_bytes},
                )
        except Exception:
            zf.close()
            raise
        return cls(zf, members, limits)

    def read(self, info: zipfile.ZipInfo) -> bytes:
        """Inflate one entry. Item-level problems raise item errors; the running total is global."""
        max_entry = self._limits.max_entry_bytes
        if info.file_size > max_entry:
            raise UploadTooLargeError("the file is larger than allowed", {"max_bytes": max_entry})
        if info.flag_bits & _ENCRYPTED_FLAG:
            raise ArchiveEntryUnreadableError("encrypted archive entries are not supported")
        try:
            with self._zf.open(info) as entry:
                # zipfile stops at the declared size and checks the CRC: a lying header cannot
                # inflate more than `file_size`, which was bounded above.
                data = entry.read(max_entry + 1)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError) as exc:
            raise ArchiveEntryUnreadableError("the archive entry could not be inflated") from exc
        if len(data) > max_entry:
            raise UploadTooLargeError("the file is larger than allowed", {"max_bytes": max_entry})
        self._inflated += len(data)
        if self._inflated > self._limits.max_uncompressed_bytes:
            raise ArchiveTooLargeError(
                "the archive inflates to more than allowed",
                {"max_uncompressed_bytes": self._limits.max_uncompressed_bytes},
            )
        return data

    def close(self) -> None:
        """Release the zip file handle."""
        self._zf.close()

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _declared_entry_count(stream: BinaryIO) -> int:
    """Entry count from the end-of-central-directory record, read before zipfile parses the
    directory (a directory of millions of entries would otherwise be parsed into memory first)."""
    stream.seek(0, 2)
    size = stream.tell()
    tail_len = min(size, _EOCD_SIZE + _MAX_COMMENT)
    stream.seek(size - tail_len)
    tail = stream.read(tail_len)
    stream.seek(0)
    pos = tail.rfind(_EOCD_SIGNATURE)
    if pos < 0 or pos + _EOCD_SIZE > len(tail):
        raise ArchiveCorruptError("the archive has no end-of-central-directory record")
    (total,) = struct.unpack("<H", tail[pos + 10 : pos + 12])
    # 0xFFFF means "see the ZIP64 record": at least 65 535 entries, far over any sane limit.
    return int(total) if total != _ZIP64_ENTRY_MARKER else _ZIP64_ENTRY_MARKER
