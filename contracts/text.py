"""Field types for what clients type: text without control characters, timestamps in ISO 8601.

PostgreSQL refuses NUL in text (a 500 before these types), and control characters in an opaque
reference are never intended; pydantic would otherwise read a bare number as a Unix timestamp,
which the API documents as ISO 8601 only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints

NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f]*$"

PlainText = Annotated[str, StringConstraints(pattern=NO_CONTROL_CHARACTERS)]
"""A string with no C0 control character (NUL, newline, tab, ...) and no DEL."""


def _iso_8601_only(value: Any) -> Any:
    if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
        raise ValueError("a timestamp must be ISO 8601 (e.g. 2026-11-30T12:00:00Z), not a number")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _expressible_in_utc(value: datetime) -> datetime:
    # 0001-01-01T00:00+01:00 is a valid ISO 8601 time that falls before year 1 in UTC: Python
    # cannot convert it (OverflowError, a 500 before this check), and no job was created then.
    try:
        (value if value.tzinfo is None else value.astimezone(UTC)).replace(tzinfo=UTC).astimezone(UTC)
    except OverflowError:
        raise ValueError("the timestamp is out of range in UTC") from None
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_8601_only), AfterValidator(_expressible_in_utc)]
"""A datetime given as ISO 8601 text, expressible in UTC; bare numbers (Unix timestamps) are refused."""
