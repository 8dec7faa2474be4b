"""A clinician signs off a result on the dashboard: the review shows in the report's history, a
second review becomes version 2 (nothing is overwritten), the worklist shows the review state, a
stale sign-off is refused with a clear 409 review.conflict, and an admin sees the history read-only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import (
    URGENT_IMAGE,
    User,
    by_id,
    expect_report_of,
    new_patient,
    open_report,
    review,
    row_of,
    show_only_patient,
    submit_done,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.shipped_bundle]

ROUTINE_STEP = "Dermatology review at the next routine appointment."


def test_a_clinician_signs_off_then_a_second_review_becomes_version_2(
    clinician_dashboard: Page,
    gateway: httpx.Client,
    key_a: str,
    clinician: User,
    ham_images: list[Path],
    artifacts: Path,
) -> None:
    page = clinician_dashboard
    job = submit_done(gateway, key_a, ham_images[URGENT_IMAGE], patient_ref=new_patient())
    assert job["result"]["triage_level"] == "urgent"
    names = job["result"]["prediction"]["class_display_names"]
    show_only_patient(page, job["metadata"]["patient_ref"])
    expect(row_of(page, job["job_id"])).to_have_attribute("data-review-state", "unreviewed")

    open_report(page, job["job_id"])
    expect(by_id(page, "report-review-state")).to_have_attribute("data-state", "unreviewed")
    expect(by_id(page, "report-next-step")).to_have_attribute("data-triage", "urgent")
    expect(by_id(page, "review-history-empty")).to_be_visible()
    expect(by_id(page, "review-version")).to_have_attribute("data-expected-version", "0")
    # Override the model: routine, with a working diagnosis chosen by its display name.
    by_id(page, "review-triage-routine").check()
    expect(by_id(page, "review-agreement")).to_have_attribute("data-agrees", "false")
    by_id(page, "review-diagnosis").select_option(label=names["nv"])
    by_id(page, "review-note").fill("Symmetric, regular network on dermoscopy.")
    by_id(page, "review-submit").click()

    expect(by_id(page, "review-done")).to_have_attribute("data-version", "1")
    items = page.get_by_test_id("review-item")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text(clinician.name)
    expect(items.first).to_contain_text(names["nv"])
    expect(items.first).to_contain_text("overrides the model")
    expect(by_id(page, "report-review-state")).to_have_attribute("data-state", "signed_off")
    expect(by_id(page, "report-next-step")).to_have_attribute("data-triage", "routine")
    expect(by_id(page, "report-next-step")).to_contain_text(ROUTINE_STEP)

    by_id(page, "report-close").click()
    row = row_of(page, job["job_id"])
    expect(row).to_have_attribute("data-review-state", "signed_off")
    expect(row.get_by_test_id("row-review")).to_contain_text("signed off")

    # Later: histopathology confirms a diagnosis the model has no class for.
    open_report(page, job["job_id"])
    expect(by_id(page, "review-version")).to_have_attribute("data-expected-version", "1")
    by_id(page, "review-triage-urgent").check()
    page.locator("#review-confirmed-box summary").click()
    by_id(page, "review-confirmed").select_option(label="Other (free text)")
    by_id(page, "review-confirmed-text").fill("Lentigo maligna")
    by_id(page, "review-basis").select_option("histopathology")
    by_id(page, "review-malignant").select_option("true")
    by_id(page, "review-submit").click()

    expect(by_id(page, "review-done")).to_have_attribute("data-version", "2")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_attribute("data-version", "1")
    expect(items.nth(0)).to_have_attribute("data-triage", "routine")
    expect(items.nth(1)).to_have_attribute("data-version", "2")
    expect(items.nth(1).get_by_test_id("review-confirmed-diagnosis")).to_contain_text("Lentigo maligna")
    expect(items.nth(1).get_by_test_id("review-confirmed-diagnosis")).to_contain_text("histopathology")
    expect(by_id(page, "report-review-state")).to_have_attribute("data-state", "diagnosis_confirmed")
    page.screenshot(path=artifacts / "signoff.png", full_page=True)
    by_id(page, "report-close").click()
    expect(row_of(page, job["job_id"])).to_have_attribute("data-review-state", "diagnosis_confirmed")


def test_a_sign_off_on_a_stale_history_shows_the_conflict_and_the_newer_review(
    clinician_dashboard: Page,
    fleet: Fleet,
    gateway: httpx.Client,
    key_a: str,
    clinician: User,
    ham_images: list[Path],
) -> None:
    page = clinician_dashboard
    job = submit_done(gateway, key_a, ham_images[URGENT_IMAGE], patient_ref=new_patient())
    page.goto(f"{fleet.gateway_url}/#/jobs/{job['job_id']}")
    expect_report_of(page, job["job_id"])
    expect(by_id(page, "review-version")).to_have_attribute("data-expected-version", "0")

    # Someone signs off while this report is open.
    review(gateway, clinician.api_key, job["job_id"], "urgent", expected_version=0)
    by_id(page, "review-triage-monitor").check()
    by_id(page, "review-submit").click()

    error = by_id(page, "review-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-code", "review.conflict")
    expect(error).to_contain_text("Someone else signed off")
    expect(page.get_by_test_id("review-item")).to_have_count(1)
    expect(by_id(page, "review-version")).to_have_attribute("data-expected-version", "1")
    # What was typed is kept; submitting again, now on the latest version, works.
    expect(by_id(page, "review-triage-monitor")).to_be_checked()
    by_id(page, "review-submit").click()
    expect(by_id(page, "review-done")).to_have_attribute("data-version", "2")
    expect(error).to_be_hidden()


def test_an_admin_sees_the_review_history_read_only(
    dashboard: Page, fleet: Fleet, gateway: httpx.Client, key_a: str, clinician: User, ham_images: list[Path]
) -> None:
    job = submit_done(gateway, key_a, ham_images[URGENT_IMAGE], patient_ref=new_patient())
    review(gateway, clinician.api_key, job["job_id"], "urgent", note="Agree; refer.")

    dashboard.goto(f"{fleet.gateway_url}/#/jobs/{job['job_id']}")

    expect_report_of(dashboard, job["job_id"])
    expect(dashboard.get_by_test_id("review-item")).to_have_count(1)
    expect(dashboard.get_by_test_id("review-item")).to_contain_text("Agree; refer.")
    expect(by_id(dashboard, "review-readonly")).to_be_visible()
    expect(by_id(dashboard, "review-form")).to_be_hidden()
