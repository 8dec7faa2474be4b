"""Submitting from the dashboard: a batch followed to the end, a photo that is not skin turned
away by the shipped bundle's OOD detector, and a frame from the camera."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import (
    JOB_TIMEOUT_MS,
    REJECTED_VERDICT,
    TERMINAL,
    by_id,
    open_report,
    row_of,
    show_only_patient,
    sign_in,
    submitted_job_id,
    upload,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.shipped_bundle]

BATCH = 5


def test_a_batch_of_five_lesions_is_followed_to_5_of_5(dashboard: Page, ham_images: list[Path]) -> None:
    upload(dashboard, ham_images[:BATCH], patient_ref=f"PT-{uuid.uuid4().hex[:10]}")

    expect(by_id(dashboard, "batch-progress")).to_be_visible()
    expect(by_id(dashboard, "batch-progress-text")).to_have_text(f"{BATCH}/{BATCH}", timeout=JOB_TIMEOUT_MS)
    progress = by_id(dashboard, "batch-progress")
    assert progress.evaluate("p => p.value === p.max")


def test_a_photo_that_is_not_skin_is_shown_rejected_in_the_worklist_and_report(
    dashboard: Page, non_skin_jpeg: Path
) -> None:
    patient = f"PT-{uuid.uuid4().hex[:10]}"
    upload(dashboard, [non_skin_jpeg], patient_ref=patient)
    job_id = submitted_job_id(dashboard)
    show_only_patient(dashboard, patient)

    row = row_of(dashboard, job_id)
    expect(row).to_have_attribute("data-status", "rejected", timeout=JOB_TIMEOUT_MS)
    expect(row).to_have_attribute("data-triage", "")
    open_report(dashboard, job_id)
    expect(by_id(dashboard, "report-verdict")).to_contain_text(REJECTED_VERDICT)
    expect(by_id(dashboard, "prob-bar")).to_have_count(0)
    expect(by_id(dashboard, "report-heatmap")).to_be_hidden()
    expect(by_id(dashboard, "report-disclaimer")).to_contain_text("not a diagnosis")


def test_a_camera_capture_is_submitted_and_its_job_finishes(
    camera_page: Page, fleet: Fleet, key_a: str
) -> None:
    sign_in(camera_page, fleet.gateway_url, key_a)
    patient = f"PT-{uuid.uuid4().hex[:10]}"
    by_id(camera_page, "field-patient").fill(patient)

    by_id(camera_page, "camera-start").click()
    preview = by_id(camera_page, "camera-preview")
    expect(preview).to_be_visible()
    camera_page.wait_for_function(
        "v => v.readyState >= 2 && !v.paused && v.videoWidth > 0", arg=preview.element_handle()
    )
    by_id(camera_page, "camera-capture").click()
    expect(by_id(camera_page, "camera-submit")).to_be_enabled()
    by_id(camera_page, "camera-submit").click()

    expect(by_id(camera_page, "camera-error")).to_be_hidden()
    job_id = submitted_job_id(camera_page)
    show_only_patient(camera_page, patient)
    # The fake camera films a test pattern: the OOD or quality gate may reject it; either way the
    # job exists and finishes.
    expect(row_of(camera_page, job_id)).to_have_attribute("data-status", TERMINAL, timeout=JOB_TIMEOUT_MS)
