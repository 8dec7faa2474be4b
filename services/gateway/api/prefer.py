"""The `Prefer: wait=N` request header (RFC 7240)."""

from __future__ import annotations


def parse_wait(prefer: str | None, max_seconds: int) -> int:
    """Seconds the caller is willing to wait, clamped to `max_seconds`; 0 when absent or invalid.

    Preferences are hints (RFC 7240 §2): a malformed one is ignored rather than rejected.
    """
    if not prefer:
        return 0
    for preference in prefer.split(","):
        token = preference.split(";", 1)[0].strip()
        name, sep, value = token.partition("=")
        if name.strip().lower() != "wait" or not sep:
            continue
        value = value.strip().strip('"')
        if value.isdigit():
            return min(int(value), max_seconds)
    return 0
