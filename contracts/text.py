"""Field types for what clients type: text without control characters, timestamps in ISO 8601.

PostgreSQL refuses NUL in text (a 500 before these types), and control characters in an opaque
reference are never intended; pydantic would otherwise read a bare number as a Unix timestamp,
which the API documents as ISO 8601 only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, StringConstraints

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


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_8601_only)]
"""A datetime given as ISO 8601 text; bare numbers (Unix timestamps) are refused."""
