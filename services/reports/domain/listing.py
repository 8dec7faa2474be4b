"""Listing reports: the filters, the page size, and opaque keyset cursors over (created_at, job_id)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.bundle import TriageLevel
from contracts.jobs import JobStatus
from contracts.ood import OodDecision
from services.reports.domain.errors import CursorInvalidError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_VERSION = 1


@dataclass(frozen=True)
class ReportFilters:
    """What a report list may be narrowed by; `since` is inclusive, `until` exclusive."""

    patient_ref: str | None = None
    triage_level: TriageLevel | None = None
    status: JobStatus | None = None
    ood_decision: OodDecision | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_cursor(created_at: datetime, job_id: str) -> str:
    """Cursor pointing just after the job (created_at, job_id) in newest-first order."""
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    payload = json.dumps(
        {"v": _VERSION, "t": created_at.astimezone(UTC).isoformat(), "id": job_id},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of `encode_cursor`; raises CursorInvalidError for anything it did not produce."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("v") != _VERSION:
            raise ValueError("unknown cursor version")
        created_at = datetime.fromisoformat(payload["t"])
        job_id = payload["id"]
        if created_at.tzinfo is None or not isinstance(job_id, str) or not job_id:
            raise ValueError("malformed cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CursorInvalidError("cursor is not valid") from exc
    return created_at.astimezone(UTC), job_id
