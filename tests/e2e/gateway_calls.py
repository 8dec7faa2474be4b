"""Calls on the public gateway API as a client makes them (httpx, multipart, Bearer keys)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

FINISHED = ("done", "rejected", "failed")
BATCH_TIMEOUT_S = 120.0


def bearer(api_key: str, **headers: str) -> dict[str, str]:
    """`Authorization: Bearer <key>` plus any other headers."""
    return {"Authorization": f"Bearer {api_key}", **headers}


def submit_image(
    gateway: httpx.Client, api_key: str, filename: str, data: bytes, **headers: str
) -> httpx.Response:
    """`POST /v1/images` with one `file` part."""
    files = {"file": (filename, data, "image/jpeg")}
    return gateway.post("/v1/images", files=files, headers=bearer(api_key, **headers))


def submit_batch(gateway: httpx.Client, api_key: str, paths: list[Path]) -> httpx.Response:
    """`POST /v1/batches` with one `files` part per image."""
    files = [("files", (path.name, path.read_bytes(), "image/jpeg")) for path in paths]
    return gateway.post("/v1/batches", files=files, headers=bearer(api_key))


def wait_for_batch(gateway: httpx.Client, api_key: str, batch_id: str) -> dict[str, Any]:
    """Poll `GET /v1/batches/{id}` until every job has finished; the last answer."""
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    while True:
        response = gateway.get(f"/v1/batches/{batch_id}", headers=bearer(api_key))
        assert response.status_code == 200, response.text
        batch: dict[str, Any] = response.json()
        counts = batch["counts"]
        if sum(counts[status] for status in FINISHED) == counts["total"]:
            return batch
        if time.monotonic() > deadline:
            pytest.fail(f"batch {batch_id} not finished after {BATCH_TIMEOUT_S:.0f} s: {counts}")
        time.sleep(0.25)


def error_code(response: httpx.Response) -> str:
    """The machine-readable code of an error body."""
    code: str = response.json()["error"]["code"]
    return code


def submit_image_with_fields(
    gateway: httpx.Client, api_key: str, path: Path, fields: dict[str, str], **headers: str
) -> httpx.Response:
    """`POST /v1/images` with one `file` part and form fields (patient_ref, lesion_id, ...)."""
    files = {"file": (path.name, path.read_bytes(), "image/jpeg")}
    return gateway.post("/v1/images", files=files, data=fields, headers=bearer(api_key, **headers))


def new_user_with_key(
    gateway: httpx.Client, admin_key: str, name: str, role: str
) -> tuple[dict[str, Any], str]:
    """`POST /v1/users` then `POST /v1/users/{id}/api-keys`, as the tenant's admin: the new user
    (UserView) and a key of theirs."""
    user = gateway.post("/v1/users", json={"name": name, "role": role}, headers=bearer(admin_key))
    assert user.status_code == 201, user.text
    made: dict[str, Any] = user.json()
    key = gateway.post(
        f"/v1/users/{made['user_id']}/api-keys", json={"expires_in_days": None}, headers=bearer(admin_key)
    )
    assert key.status_code == 201, key.text
    assert key.json()["user_id"] == made["user_id"]
    api_key: str = key.json()["api_key"]
    return made, api_key
