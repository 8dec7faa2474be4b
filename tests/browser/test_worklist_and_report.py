"""A lesion photo uploaded from the dashboard shows up triaged in the worklist by itself, and its
report shows the image, heatmap, probabilities, triage, conformal set, verdict, model and the
decision-support disclaimer. Screenshots of both views are left in test-artifacts/browser/."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from contracts.bundle import BundleManifest
from tests.browser.dashboard import (
    JOB_TIMEOUT_MS,
    TRIAGE_LEVEL,
    by_id,
    expect_report_of,
    is_png,
    open_report,
    row_of,
    show_only_patient,
    submitted_job_id,
    upload,
)
from tests.e2e.gateway_calls import bearer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.shipped_bundle]

# Indices into `ham_images` of lesions the shipped bundle accepts (its OOD rule turns away ~5% of
# HAM10000 images, e.g. ISIC_0024312 and ISIC_0024332 of those 24; the model is deterministic):
# ISIC_0024310 is triaged urgent, ISIC_0024318 monitor.
UPLOADED, OPENED = 4, 11
TAB_LIMIT = 20
WORKLIST_PAGE = 25  # rows per worklist page (the dashboard's page size)


def _patient() -> str:
    return f"PT-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def done_job(gateway: httpx.Client, key_a: str, ham_images: list[Path]) -> dict[str, Any]:
    """A HAM lesion submitted through the API and finished (done), with its own patient ref."""
    path = ham_images[OPENED]
    response = gateway.post(
        "/v1/images",
        files={"file": (path.name, path.read_bytes(), "image/jpeg")},
        data={"patient_ref": _patient(), "body_site": "back", "age": "54", "sex": "female"},
        headers=bearer(key_a, Prefer="wait=30"),
    )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    assert job["status"] == "done", job["result"]["ood"] if job.get("result") else job
    return job


def test_an_uploaded_lesion_appears_triaged_in_the_worklist_without_a_reload(
    dashboard: Page, ham_images: list[Path], artifacts: Path
) -> None:
    # A marker on the window survives only if the page is never reloaded or navigated away.
    dashboard.evaluate("window.__sameDocument = true")

    patient = _patient()
    upload(dashboard, [ham_images[UPLOADED]], patient_ref=patient, site="forearm", age="61", sex="male")
    job_id = submitted_job_id(dashboard)
    # Priority order puts a new job after older unreviewed ones: show this patient's only.
    show_only_patient(dashboard, patient)

    row = row_of(dashboard, job_id)
    expect(row).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)
    expect(row).to_have_attribute("data-triage", TRIAGE_LEVEL)
    triage = row.get_attribute("data-triage")
    assert triage
    expect(row.get_by_test_id("row-triage")).to_have_text(re.compile(triage, re.IGNORECASE))
    assert dashboard.evaluate("window.__sameDocument === true")
    shot = artifacts / "worklist.png"
    dashboard.screenshot(path=shot, full_page=True)
    assert is_png(shot)


def test_the_report_shows_image_probabilities_triage_conformal_set_verdict_model_and_disclaimer(
    dashboard: Page, done_job: dict[str, Any], shipped_manifest: BundleManifest, artifacts: Path
) -> None:
    result = done_job["result"]
    prediction = result["prediction"]
    show_only_patient(dashboard, done_job["metadata"]["patient_ref"])

    view = open_report(dashboard, done_job["job_id"])

    image = by_id(dashboard, "report-image")
    expect(image).to_be_visible()
    dashboard.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    bars = view.get_by_test_id("prob-bar")
    expect(bars).to_have_count(len(shipped_manifest.classes))
    shown = {bars.nth(i).get_attribute("data-class") for i in range(bars.count())}
    assert shown == {c.code for c in shipped_manifest.classes}
    expect(by_id(dashboard, "report-triage")).to_contain_text(result["triage_level"])
    # A clinician reads display names, never class codes.
    for code in prediction["conformal_set"]:
        expect(by_id(dashboard, "report-conformal")).to_contain_text(prediction["class_display_names"][code])
    top = prediction["top_class"]
    expect(view.locator(f'[data-testid="prob-bar"][data-class="{top}"]')).to_contain_text(
        prediction["class_display_names"][top]
    )
    expect(by_id(dashboard, "report-verdict")).to_contain_text("accepted")
    expect(by_id(dashboard, "report-model")).to_contain_text(shipped_manifest.name)
    expect(by_id(dashboard, "report-model")).to_contain_text(shipped_manifest.version)
    # Who submitted it: the fleet's tenant key acts as the tenant's admin user.
    assert done_job["submitted_by"]["name"] == "admin"
    expect(by_id(dashboard, "report-timestamps")).to_contain_text("submitted by")
    expect(by_id(dashboard, "report-timestamps")).to_contain_text(done_job["submitted_by"]["name"])
    disclaimer = by_id(dashboard, "report-disclaimer")
    expect(disclaimer).to_contain_text("decision support")
    expect(disclaimer).to_contain_text("not a diagnosis")
    expect(by_id(dashboard, "report-heatmap")).to_be_visible()
    shot = artifacts / "report-view.png"
    dashboard.screenshot(path=shot, full_page=True)
    assert is_png(shot)


def test_the_heatmap_toggle_hides_and_shows_the_overlay(dashboard: Page, done_job: dict[str, Any]) -> None:
    show_only_patient(dashboard, done_job["metadata"]["patient_ref"])
    open_report(dashboard, done_job["job_id"])
    heatmap = by_id(dashboard, "report-heatmap")
    toggle = by_id(dashboard, "heatmap-toggle")
    expect(heatmap).to_be_visible()
    dashboard.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=heatmap.element_handle())
    size = heatmap.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size[0] > 0 and size[1] > 0

    toggle.click()
    expect(heatmap).to_be_hidden()

    toggle.click()
    expect(heatmap).to_be_visible()


def test_the_report_closes_back_to_the_worklist(dashboard: Page, done_job: dict[str, Any]) -> None:
    show_only_patient(dashboard, done_job["metadata"]["patient_ref"])
    open_report(dashboard, done_job["job_id"])

    by_id(dashboard, "report-close").click()

    expect(by_id(dashboard, "report-view")).to_be_hidden()
    expect(by_id(dashboard, "worklist")).to_be_visible()


def test_enter_on_a_focused_worklist_row_opens_its_report(dashboard: Page, done_job: dict[str, Any]) -> None:
    show_only_patient(dashboard, done_job["metadata"]["patient_ref"])
    row = row_of(dashboard, done_job["job_id"])
    expect(row).to_be_visible()

    row.focus()
    expect(row).to_be_focused()
    dashboard.keyboard.press("Enter")

    expect_report_of(dashboard, done_job["job_id"])
    expect(by_id(dashboard, "report-disclaimer")).to_contain_text("not a diagnosis")


def test_tab_reaches_a_worklist_row_from_the_filters(dashboard: Page, done_job: dict[str, Any]) -> None:
    show_only_patient(dashboard, done_job["metadata"]["patient_ref"])
    row = row_of(dashboard, done_job["job_id"])
    expect(row).to_be_visible()

    # From the last filter, Tab walks the date fields' parts, then reaches the first row.
    by_id(dashboard, "filter-to").focus()
    for _ in range(TAB_LIMIT):
        dashboard.keyboard.press("Tab")
        if row.evaluate("tr => tr === document.activeElement"):
            break

    expect(row).to_be_focused()
    dashboard.keyboard.press("Enter")
    expect_report_of(dashboard, done_job["job_id"])


def test_a_deep_link_opens_the_jobs_report(dashboard: Page, fleet: Fleet, done_job: dict[str, Any]) -> None:
    dashboard.goto(f"{fleet.gateway_url}/#/jobs/{done_job['job_id']}")

    expect_report_of(dashboard, done_job["job_id"])
    expect(by_id(dashboard, "report-triage")).to_contain_text(done_job["result"]["triage_level"])


def test_the_triage_filter_shows_only_jobs_of_that_level(dashboard: Page, done_job: dict[str, Any]) -> None:
    level = done_job["result"]["triage_level"]
    rows = dashboard.get_by_test_id("worklist-row")
    by_id(dashboard, "filter-sort").select_option("newest")
    expect(row_of(dashboard, done_job["job_id"])).to_be_visible()

    by_id(dashboard, "filter-triage").select_option(level)

    expect(row_of(dashboard, done_job["job_id"])).to_be_visible()
    expect(dashboard.locator(f'[data-testid="worklist-row"]:not([data-triage="{level}"])')).to_have_count(0)
    assert rows.count() >= 1


def test_the_patient_filter_shows_only_that_patients_jobs(dashboard: Page, done_job: dict[str, Any]) -> None:
    rows = dashboard.get_by_test_id("worklist-row")

    show_only_patient(dashboard, done_job["metadata"]["patient_ref"])

    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", done_job["job_id"])
    show_only_patient(dashboard, _patient())
    expect(rows).to_have_count(0)


def test_older_and_newer_page_through_more_jobs_than_one_page_holds(
    dashboard: Page, gateway: httpx.Client, key_a: str, ham_images: list[Path]
) -> None:
    patient = _patient()
    paths = [ham_images[i % len(ham_images)] for i in range(WORKLIST_PAGE + 1)]
    accepted = gateway.post(
        "/v1/batches",
        files=[("files", (path.name, path.read_bytes(), "image/jpeg")) for path in paths],
        data={"patient_ref": patient},
        headers=bearer(key_a),
    )
    assert accepted.status_code == 202, accepted.text
    submitted = {item["job_id"] for item in accepted.json()["items"]}
    rows = dashboard.get_by_test_id("worklist-row")
    # Newest first: a stable order while the batch's jobs finish (in priority order a job moves
    # between groups as it is triaged).
    by_id(dashboard, "filter-sort").select_option("newest")
    show_only_patient(dashboard, patient)
    # The unfiltered page before it also holds a full page of rows: wait for this batch's own.
    own_rows = dashboard.locator(
        ", ".join(f'[data-testid="worklist-row"][data-job-id="{job_id}"]' for job_id in sorted(submitted))
    )
    expect(own_rows).to_have_count(WORKLIST_PAGE)
    expect(rows).to_have_count(WORKLIST_PAGE)
    first_page = {rows.nth(i).get_attribute("data-job-id") for i in range(WORKLIST_PAGE)}

    by_id(dashboard, "worklist-next").click()

    expect(rows).to_have_count(1)
    expect(by_id(dashboard, "worklist-next")).to_be_disabled()
    last = rows.first.get_attribute("data-job-id")
    assert first_page | {last} == submitted
    by_id(dashboard, "worklist-prev").click()
    expect(rows).to_have_count(WORKLIST_PAGE)
    expect(by_id(dashboard, "worklist-prev")).to_be_disabled()
