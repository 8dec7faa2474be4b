"""Listing reports: the filters, the page size, the two orders (newest first, or the clinicians'
priority worklist) and opaque keyset cursors over each order's key."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from contracts.bundle import TriageLevel
from contracts.jobs import JobStatus
from contracts.ood import OodDecision
from contracts.reviews import ReviewState
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
    review_state: ReviewState | None = None


# The worklist's groups, in order.
PRIORITY_UNREVIEWED_URGENT = 0
PRIORITY_UNREVIEWED = 1
PRIORITY_REST = 2


def priority_group(status: str, review_state: str | None, triage_level: str | None) -> int:
    """A job's group in the priority worklist (the database orders by the same rule)."""
    if status != JobStatus.done.value or review_state != ReviewState.unreviewed.value:
        return PRIORITY_REST
    return PRIORITY_UNREVIEWED_URGENT if triage_level == "urgent" else PRIORITY_UNREVIEWED


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
        if "g" in payload:
            raise ValueError("a priority cursor")
        created_at = datetime.fromisoformat(payload["t"])
        job_id = payload["id"]
        if created_at.tzinfo is None or not isinstance(job_id, str) or not job_id:
            raise ValueError("malformed cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CursorInvalidError("cursor is not valid") from exc
    return created_at.astimezone(UTC), job_id


@dataclass(frozen=True)
class PriorityPosition:
    """Where a page of the priority worklist ends: the last job's group, creation time and id."""

    group: int
    created_at: datetime
    job_id: str


def encode_priority_cursor(position: PriorityPosition) -> str:
    """Cursor pointing just after `position` in the priority order."""
    created_at = position.created_at
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    payload = json.dumps(
        {
            "v": _VERSION,
            "g": position.group,
            "t": created_at.astimezone(UTC).isoformat(),
            "id": position.job_id,
        },
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_priority_cursor(cursor: str) -> PriorityPosition:
    """Inverse of `encode_priority_cursor`; CursorInvalidError for anything else (a `newest`
    cursor included: a cursor belongs to the order that issued it)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("v") != _VERSION:
            raise ValueError("unknown cursor version")
        group, job_id = payload["g"], payload["id"]
        created_at = datetime.fromisoformat(payload["t"])
        valid_group = type(group) is int and PRIORITY_UNREVIEWED_URGENT <= group <= PRIORITY_REST
        if not valid_group or created_at.tzinfo is None or not isinstance(job_id, str) or not job_id:
            raise ValueError("malformed cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CursorInvalidError("cursor is not valid") from exc
    return PriorityPosition(group, created_at.astimezone(UTC), job_id)
