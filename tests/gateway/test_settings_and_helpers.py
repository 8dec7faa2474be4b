"""Settings that fail fast, `Prefer: wait`, file names, archive edge cases."""

from __future__ import annotations

import io
import zipfile

import pytest
from pydantic import ValidationError

from services.gateway.api.prefer import parse_wait
from services.gateway.api.submission import batch_id_for
from services.gateway.config import Settings
from services.gateway.domain.archive import ArchiveLimits, ImageArchive, is_junk
from services.gateway.domain.batch import clean_filename
from services.gateway.domain.errors import ArchiveEntryUnreadableError, UploadTooLargeError
from tests.gateway import samples


@pytest.mark.parametrize("token", ["", "   ", "changeme", "CHANGEME", "<internal-token>"])
def test_empty_or_placeholder_internal_token_fails_at_start_up(token, monkeypatch):
    monkeypatch.setenv("GATEWAY_INTERNAL_TOKEN", token)

    with pytest.raises(ValidationError):
        Settings()


def test_missing_internal_token_fails_at_start_up(monkeypatch):
    monkeypatch.delenv("GATEWAY_INTERNAL_TOKEN", raising=False)

    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_read_from_gateway_prefixed_variables(monkeypatch):
    monkeypatch.setenv("GATEWAY_INTERNAL_TOKEN", "a-real-secret-value")
    monkeypatch.setenv("GATEWAY_MAX_BATCH_ITEMS", "7")
    monkeypatch.setenv("GATEWAY_REPORTS_URL", "http://reports:8002/")

    settings = Settings()

    assert settings.max_batch_items == 7
    assert settings.reports_url == "http://reports:8002"
    assert settings.max_upload_bytes == 10 * 1024 * 1024
    assert settings.broker_url == "sqla+sqlite:///var/celery-broker.db"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 0),
        ("wait=10", 10),
        ("respond-async, wait=3", 3),
        ('wait="4"', 4),
        ("wait=100", 30),
        ("wait=-1", 0),
        ("wait=soon", 0),
        ("handling=lenient", 0),
    ],
)
def test_prefer_wait_is_parsed_and_clamped(header, expected):
    assert parse_wait(header, max_seconds=30) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b/lesion.jpg", "lesion.jpg"),
        ("C:\\photos\\lesion.jpg", "lesion.jpg"),
        ("bad\x00name\n.jpg", "badname.jpg"),
        ("", None),
        (None, None),
        ("x" * 300 + ".jpg", "x" * 255),
    ],
)
def test_file_names_are_reduced_to_a_clean_base_name(name, expected):
    assert clean_filename(name) == expected


@pytest.mark.parametrize(
    ("name", "junk"),
    [("__MACOSX/._a.jpg", True), ("a/.DS_Store", True), (".hidden/a.jpg", True), ("a/b.jpg", False)],
)
def test_resource_forks_and_dotfiles_are_junk(name, junk):
    assert is_junk(name) is junk


def test_batch_id_from_an_idempotency_key_is_stable_and_tenant_scoped():
    assert batch_id_for("t1", "k") == batch_id_for("t1", "k")
    assert batch_id_for("t1", "k") != batch_id_for("t2", "k")
    assert len(batch_id_for("t1", "k")) == 32


def _limits(**overrides: int) -> ArchiveLimits:
    values = {"max_entries": 10, "max_items": 5, "max_uncompressed_bytes": 10_000, "max_entry_bytes": 1_000}
    values.update(overrides)
    return ArchiveLimits(**values)


def test_archive_entry_over_the_upload_limit_is_an_item_error():
    data = samples.zip_of({"big.jpg": b"\0" * 2_000})
    archive = ImageArchive.open(io.BytesIO(data), _limits(max_uncompressed_bytes=100_000))

    with archive, pytest.raises(UploadTooLargeError):
        archive.read(archive.members[0])


def test_encrypted_archive_entry_is_an_item_error():
    data = bytearray(samples.zip_of({"a.jpg": b"abc"}, compression=zipfile.ZIP_STORED))
    # Set the "encrypted" flag bit in the local header and the central directory entry.
    data[6] |= 0x1
    central = data.rfind(b"PK\x01\x02")
    data[central + 8] |= 0x1
    archive = ImageArchive.open(io.BytesIO(bytes(data)), _limits())

    with archive, pytest.raises(ArchiveEntryUnreadableError):
        archive.read(archive.members[0])
