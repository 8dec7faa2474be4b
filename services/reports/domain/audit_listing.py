"""Reading the audit trail back: its filters and opaque keyset cursors over (at, event id),
newest first."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from services.reports.domain.errors import CursorInvalidError

# A cursor names its kind, so a report-list cursor is never taken for an audit one.
_KIND = "audit"
_VERSION = 1


@dataclass(frozen=True)
class AuditFilters:
    """What an audit listing may be narrowed by; `since` is inclusive, `until` exclusive."""

    user_id: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def encode_audit_cursor(at: datetime, event_id: int) -> str:
    """Cursor pointing just after the entry (at, event_id) in newest-first order."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    payload = json.dumps(
        {"k": _KIND, "v": _VERSION, "t": at.astimezone(UTC).isoformat(), "id": event_id},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_audit_cursor(cursor: str) -> tuple[datetime, int]:
    """Inverse of `encode_audit_cursor`; CursorInvalidError for anything it did not produce."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("k") != _KIND or payload.get("v") != _VERSION:
            raise ValueError("not an audit cursor")
        at = datetime.fromisoformat(payload["t"])
        event_id = payload["id"]
        if at.tzinfo is None or not isinstance(event_id, int) or isinstance(event_id, bool):
            raise ValueError("malformed cursor")
    except (binascii.Error, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CursorInvalidError("cursor is not valid") from exc
    return at.astimezone(UTC), event_id
