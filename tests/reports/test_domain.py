"""Pure logic: cursors, API keys, job lifecycle."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from contracts.jobs import JobStatus
from services.reports.domain.api_keys import display_prefix, generate_api_key, hash_api_key
from services.reports.domain.errors import CursorInvalidError
from services.reports.domain.lifecycle import may_mark_failed, may_mark_running
from services.reports.domain.listing import decode_cursor, encode_cursor


def test_cursor_round_trips_position() -> None:
    created_at = datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(created_at, "job_1")) == (created_at, "job_1")


@pytest.mark.parametrize(
    "cursor", ["", "not-base64!!", "eyJ2IjoyfQ", "W10", "eyJ2IjoxLCJ0IjoieCIsImlkIjoiYSJ9"]
)
def test_malformed_cursor_is_cursor_invalid(cursor: str) -> None:
    with pytest.raises(CursorInvalidError):
        decode_cursor(cursor)


def test_api_key_is_sk_prefixed_urlsafe_and_stored_as_sha256() -> None:
    key = generate_api_key()
    assert key.startswith("sk_") and len(key) == 3 + 43
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(display_prefix(key)) and len(display_prefix(key)) < len(key)


def test_api_keys_are_unique() -> None:
    assert len({generate_api_key() for _ in range(100)}) == 100


@pytest.mark.parametrize("status", [JobStatus.done, JobStatus.rejected])
def test_finished_jobs_cannot_fail_or_restart(status: JobStatus) -> None:
    assert not may_mark_failed(status)
    assert not may_mark_running(status)
