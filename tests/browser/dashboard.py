"""What a clinician does on the dashboard, as Playwright steps on its `data-testid`s
(services/gateway/dashboard/). Waiting is Playwright's own auto-waiting `expect`."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

# A job goes queued -> running -> done/rejected within a second or two on the shipped bundle;
# the worklist notices on its next refresh (~3 s).
JOB_TIMEOUT_MS = 60_000
TERMINAL = re.compile(r"^(done|rejected|failed)$")
TRIAGE_LEVEL = re.compile(r"^(urgent|routine|monitor)$")
REJECTED_VERDICT = re.compile(r"rejected_ood|rejected_quality")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def by_id(page: Page, test_id: str) -> Locator:
    return page.get_by_test_id(test_id)


def sign_in(page: Page, gateway_url: str, api_key: str) -> None:
    """Open the dashboard and sign in; returns once the worklist shows."""
    page.goto(gateway_url + "/")
    by_id(page, "signin-key").fill(api_key)
    by_id(page, "signin-submit").click()
    expect(by_id(page, "worklist")).to_be_visible()


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
    """Filter the worklist on a patient ref (robust however many jobs other tests made)."""
    by_id(page, "filter-patient").fill(patient_ref)


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
