"""What a clinician does on the dashboard, as Playwright steps on its `data-testid`s
(services/gateway/dashboard/). Waiting is Playwright's own auto-waiting `expect`."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from tests.e2e.gateway_calls import bearer, new_user_with_key

# A job goes queued -> running -> done/rejected within a second or two on the shipped bundle;
# the worklist notices on its next refresh (~3 s).
JOB_TIMEOUT_MS = 60_000
TERMINAL = re.compile(r"^(done|rejected|failed)$")
TRIAGE_LEVEL = re.compile(r"^(urgent|routine|monitor)$")
REJECTED_VERDICT = re.compile(r"rejected_ood|rejected_quality")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Indices into `ham_images` (the first 24 HAM10000 images) whose level the shipped bundle gives
# (deterministic): ISIC_0024310 urgent, ISIC_0024318 monitor.
URGENT_IMAGE, MONITOR_IMAGE = 4, 11


def by_id(page: Page, test_id: str) -> Locator:
    return page.get_by_test_id(test_id)


@dataclass(frozen=True)
class User:
    """A user of tenant-a made through the people API, with one API key."""

    user_id: str
    name: str
    role: str
    api_key: str


def add_user(gateway: httpx.Client, admin_key: str, name: str, role: str) -> User:
    """`POST /v1/users`, then `POST /v1/users/{id}/api-keys`, as the tenant's admin."""
    made, api_key = new_user_with_key(gateway, admin_key, name, role)
    return User(made["user_id"], name, role, api_key)


def sign_in(page: Page, gateway_url: str, api_key: str) -> None:
    """Open the dashboard and sign in; returns once the worklist shows."""
    page.goto(gateway_url + "/")
    by_id(page, "signin-key").fill(api_key)
    by_id(page, "signin-submit").click()
    expect(by_id(page, "worklist")).to_be_visible()


def new_patient() -> str:
    """A patient ref no other test uses (the fleet is shared by the whole package)."""
    return f"PT-{uuid.uuid4().hex[:10]}"


def submit_done(gateway: httpx.Client, api_key: str, path: Path, **fields: str) -> dict[str, Any]:
    """`POST /v1/images` waiting for the result; the job, which must be done (accepted)."""
    response = gateway.post(
        "/v1/images",
        files={"file": (path.name, path.read_bytes(), "image/jpeg")},
        data=fields,
        headers=bearer(api_key, Prefer="wait=30"),
    )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "done", job
    return job


def review(
    gateway: httpx.Client, api_key: str, job_id: str, triage_level: str, **fields: Any
) -> dict[str, Any]:
    """`POST /v1/jobs/{id}/reviews` as a clinician; the new ReviewView."""
    response = gateway.post(
        f"/v1/jobs/{job_id}/reviews", json={"triage_level": triage_level, **fields}, headers=bearer(api_key)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def upload(page: Page, paths: list[Path], patient_ref: str = "", **fields: str) -> None:
    """Choose files in the upload form, fill the context fields and submit."""
    by_id(page, "upload-input").set_input_files(paths)
    if patient_ref:
        by_id(page, "field-patient").fill(patient_ref)
    for name, value in fields.items():
        field = by_id(page, f"field-{name}")
        if name == "sex":
            field.select_option(value)
        else:
            field.fill(value)
    by_id(page, "upload-submit").click()


def submitted_job_id(page: Page) -> str:
    """The job id the single-upload (or camera) result names."""
    result = by_id(page, "upload-result")
    expect(result).to_be_visible()
    expect(result).to_have_attribute("data-job-id", re.compile(r".+"))
    job_id = result.get_attribute("data-job-id")
    assert job_id
    return job_id


def row_of(page: Page, job_id: str) -> Locator:
    return page.locator(f'[data-testid="worklist-row"][data-job-id="{job_id}"]')


def show_only_patient(page: Page, patient_ref: str) -> None:
    """Filter the worklist on a patient ref (robust however many jobs other tests made), and wait
    until the rows shown were fetched for it: Enter applies it at once, with no restart left
    pending to send a test that pages on back to the first page."""
    field = by_id(page, "filter-patient")
    field.fill(patient_ref)
    field.press("Enter")
    expect(page.locator("#worklist-body")).to_have_attribute("data-patient", patient_ref)


def open_report(page: Page, job_id: str) -> Locator:
    """Click the job's row and return the report view, once it shows that job."""
    row_of(page, job_id).click()
    return expect_report_of(page, job_id)


def expect_report_of(page: Page, job_id: str) -> Locator:
    """The report view, shown for `job_id` (its deep link `#/jobs/<id>` is the page's URL)."""
    view = by_id(page, "report-view")
    expect(view).to_be_visible()
    expect(page).to_have_url(re.compile(rf"#/jobs/{re.escape(job_id)}$"))
    return view


def is_png(path: Path) -> bool:
    return (
        path.is_file() and path.stat().st_size > len(PNG_SIGNATURE) and path.read_bytes()[:8] == PNG_SIGNATURE
    )
