"""Starting and continuing to track a lesion from the dashboard: a lesion added on a patient's body
map (its position chosen on an outline, by mouse or keyboard), then images added on its timeline
(file picker or drag and drop) that the timeline follows until they are analysed; and the way from
a report or the worklist to a patient's lesions when an image names no lesion."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import (
    JOB_TIMEOUT_MS,
    MONITOR_IMAGE,
    URGENT_IMAGE,
    by_id,
    expect_report_of,
    new_patient,
    sign_in,
    submit_done,
)
from tests.e2e.gateway_calls import bearer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.shipped_bundle]

# The body view's SVG is 100 x 234 units: the outline's box (100 x 220) with the caption under it.
OUTLINE_SHARE_OF_HEIGHT = 220 / 234
PHONE_WIDTH = 375
# A File in a DataTransfer, as a drag from the desktop would bring (for a `drop` event).
DROPPED_FILE = """([name, data]) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
    return transfer;
}"""


def lesions_of(gateway: httpx.Client, api_key: str, patient_ref: str) -> list[dict[str, Any]]:
    """`GET /v1/lesions?patient_ref=...`: the patient's lesions, oldest first."""
    response = gateway.get("/v1/lesions", params={"patient_ref": patient_ref}, headers=bearer(api_key))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def open_patient(page: Page, fleet: Fleet, patient_ref: str) -> None:
    page.goto(f"{fleet.gateway_url}/#/patients/{patient_ref}")
    expect(by_id(page, "patient-view")).to_be_visible()
    expect(page.locator("#patient-title")).to_have_text(f"Patient {patient_ref}")


def click_outline(view: Locator, x: float, y: float) -> None:
    """Click the outline at (x, y) in [0, 1] of its box."""
    box = view.bounding_box()
    assert box
    view.click(position={"x": x * box["width"], "y": y * box["height"] * OUTLINE_SHARE_OF_HEIGHT})


def expect_done_image(page: Page, job_id: str, triage_level: str) -> Locator:
    """The status line and the timeline's card of a new image, once it is analysed."""
    status = by_id(page, "lesion-image-status")
    expect(status).to_have_attribute("data-job-id", job_id)
    expect(status).to_have_attribute("data-status", "done", timeout=JOB_TIMEOUT_MS)
    expect(status).to_contain_text(f"triage level {triage_level}")
    card = page.locator(f'[data-testid="lesion-image"][data-job-id="{job_id}"]')
    expect(card.get_by_test_id("lesion-image-triage")).to_have_text(triage_level)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0",
        arg=card.get_by_test_id("lesion-thumb").element_handle(),
    )
    return card


def test_a_lesion_added_on_the_back_outline_then_an_image_through_the_file_picker(
    clinician_dashboard: Page,
    fleet: Fleet,
    gateway: httpx.Client,
    key_a: str,
    ham_images: list[Path],
    artifacts: Path,
) -> None:
    page = clinician_dashboard
    patient = new_patient()
    open_patient(page, fleet, patient)
    expect(by_id(page, "patient-empty")).to_be_visible()

    by_id(page, "lesion-add-toggle").click()
    expect(by_id(page, "lesion-form")).to_be_visible()
    expect(by_id(page, "lesion-label")).to_be_focused()
    by_id(page, "lesion-label").fill("Left scapula naevus")
    by_id(page, "lesion-site").fill("back")
    by_id(page, "lesion-laterality").select_option("left")
    back = by_id(page, "body-map-back")
    click_outline(back, 0.35, 0.3)
    expect(back.get_by_test_id("body-map-marker")).to_have_count(1)
    expect(by_id(page, "body-map-front").get_by_test_id("body-map-marker")).to_have_count(0)
    expect(by_id(page, "lesion-position")).to_contain_text("back view")
    page.screenshot(path=artifacts / "lesion-add.png", full_page=True)
    by_id(page, "lesion-submit").click()

    added = by_id(page, "lesion-added")
    expect(added).to_have_attribute("data-lesion-id", re.compile(r".+"))
    lesion_id = added.get_attribute("data-lesion-id")
    assert lesion_id
    expect(by_id(page, "lesion-form")).to_be_hidden()
    expect(back.locator(f'[data-testid="body-map-dot"][data-lesion-id="{lesion_id}"]')).to_be_visible()
    expect(back.get_by_test_id("body-map-marker")).to_have_count(0)
    expect(by_id(page, "patient-lesions")).to_contain_text("Left scapula naevus")
    [lesion] = lesions_of(gateway, key_a, patient)
    assert lesion["lesion_id"] == lesion_id
    assert (lesion["label"], lesion["body_site"], lesion["laterality"]) == (
        "Left scapula naevus",
        "back",
        "left",
    )
    position = lesion["body_map"]
    assert position["view"] == "back"
    assert position["x"] == pytest.approx(0.35, abs=0.01) and position["y"] == pytest.approx(0.3, abs=0.01)

    by_id(page, "lesion-added-link").click()
    expect(by_id(page, "lesion-view")).to_have_attribute("data-lesion-id", lesion_id)
    expect(by_id(page, "lesion-empty")).to_be_visible()
    by_id(page, "lesion-image-input").set_input_files(ham_images[URGENT_IMAGE])
    by_id(page, "lesion-image-submit").click()

    status = by_id(page, "lesion-image-status")
    expect(status).to_have_attribute("data-job-id", re.compile(r".+"))
    job_id = status.get_attribute("data-job-id")
    assert job_id
    expect_done_image(page, job_id, "urgent")
    expect(page.get_by_test_id("lesion-image")).to_have_count(1)
    expect(by_id(page, "lesion-empty")).to_be_hidden()
    page.screenshot(path=artifacts / "lesion-image-added.png", full_page=True)
    job = gateway.get(f"/v1/jobs/{job_id}", headers=bearer(key_a))
    assert job.status_code == 200, job.text
    assert job.json()["metadata"]["lesion_id"] == lesion_id
    assert job.json()["metadata"]["patient_ref"] == patient
    assert job.json()["result"]["triage_level"] == "urgent"


def test_an_image_dropped_on_the_timeline_joins_it_with_the_change_from_the_last(
    dashboard: Page, fleet: Fleet, gateway: httpx.Client, key_a: str, ham_images: list[Path]
) -> None:
    patient = new_patient()
    created = gateway.post(
        "/v1/lesions", json={"patient_ref": patient, "label": "Forearm lesion"}, headers=bearer(key_a)
    )
    assert created.status_code == 201, created.text
    lesion_id = created.json()["lesion_id"]
    first = submit_done(gateway, key_a, ham_images[MONITOR_IMAGE], patient_ref=patient, lesion_id=lesion_id)
    dashboard.goto(f"{fleet.gateway_url}/#/lesions/{lesion_id}")
    expect(dashboard.get_by_test_id("lesion-image")).to_have_count(1)

    path = ham_images[URGENT_IMAGE]
    transfer = dashboard.evaluate_handle(
        DROPPED_FILE, [path.name, base64.b64encode(path.read_bytes()).decode()]
    )
    by_id(dashboard, "lesion-image-dropzone").dispatch_event("drop", {"dataTransfer": transfer})
    expect(by_id(dashboard, "lesion-image-selected")).to_have_text(f"{path.name} selected")
    by_id(dashboard, "lesion-image-submit").click()

    status = by_id(dashboard, "lesion-image-status")
    expect(status).to_have_attribute("data-job-id", re.compile(r".+"))
    job_id = status.get_attribute("data-job-id")
    assert job_id and job_id != first["job_id"]
    expect_done_image(dashboard, job_id, "urgent")
    images = dashboard.get_by_test_id("lesion-image")
    expect(images).to_have_count(2)
    assert [images.nth(i).get_attribute("data-job-id") for i in range(2)] == [first["job_id"], job_id]
    change = dashboard.get_by_test_id("lesion-change")
    expect(change).to_have_attribute("data-from", first["job_id"])
    expect(change).to_have_attribute("data-to", job_id)


def test_a_file_the_api_refuses_shows_its_error_code_and_adds_nothing(
    dashboard: Page, fleet: Fleet, gateway: httpx.Client, key_a: str
) -> None:
    created = gateway.post("/v1/lesions", json={"patient_ref": new_patient()}, headers=bearer(key_a))
    assert created.status_code == 201, created.text
    dashboard.goto(f"{fleet.gateway_url}/#/lesions/{created.json()['lesion_id']}")
    expect(by_id(dashboard, "lesion-empty")).to_be_visible()

    by_id(dashboard, "lesion-image-submit").click()
    expect(by_id(dashboard, "lesion-image-error")).to_have_attribute("data-code", "client.no_file")

    by_id(dashboard, "lesion-image-input").set_input_files(
        {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"these are notes, not an image"}
    )
    by_id(dashboard, "lesion-image-submit").click()

    error = by_id(dashboard, "lesion-image-error")
    expect(error).to_have_attribute("data-code", re.compile(r"^image\."))
    expect(by_id(dashboard, "lesion-image-status")).to_be_hidden()
    expect(dashboard.get_by_test_id("lesion-image")).to_have_count(0)


def test_a_lesion_placed_with_the_keyboard_after_an_invalid_label_is_refused(
    dashboard: Page, fleet: Fleet, gateway: httpx.Client, key_a: str
) -> None:
    patient = new_patient()
    open_patient(dashboard, fleet, patient)
    by_id(dashboard, "lesion-add-toggle").press("Enter")
    # A tab is a control character, which the API refuses in a label (422).
    by_id(dashboard, "lesion-label").fill("chest\tlesion")
    front = by_id(dashboard, "body-map-front")
    front.focus()
    for key in ("Enter", "ArrowRight", "ArrowRight", "ArrowDown"):
        front.press(key)
    expect(front.get_by_test_id("body-map-marker")).to_have_count(1)
    by_id(dashboard, "lesion-label").press("Enter")

    error = by_id(dashboard, "lesion-form-error")
    expect(error).to_have_attribute("data-code", "request.invalid")
    assert lesions_of(gateway, key_a, patient) == []

    by_id(dashboard, "lesion-label").fill("chest lesion")
    by_id(dashboard, "lesion-label").press("Enter")

    expect(by_id(dashboard, "lesion-added-link")).to_be_focused()
    [lesion] = lesions_of(gateway, key_a, patient)
    assert lesion["body_map"] == {"view": "front", "x": 0.52, "y": 0.41}
    assert lesion["laterality"] is None and lesion["body_site"] is None
    expect(
        front.locator(f'[data-testid="body-map-dot"][data-lesion-id="{lesion["lesion_id"]}"]')
    ).to_be_visible()


def test_a_report_and_the_worklist_lead_to_the_patients_lesions_when_the_image_names_none(
    dashboard: Page, fleet: Fleet, gateway: httpx.Client, key_a: str, ham_images: list[Path]
) -> None:
    patient = new_patient()
    job = submit_done(gateway, key_a, ham_images[MONITOR_IMAGE], patient_ref=patient)
    dashboard.goto(f"{fleet.gateway_url}/#/jobs/{job['job_id']}")
    expect_report_of(dashboard, job["job_id"])

    by_id(dashboard, "report-patient-link").click()

    expect(dashboard).to_have_url(f"{fleet.gateway_url}/#/patients/{patient}")
    expect(by_id(dashboard, "patient-view")).to_be_visible()
    expect(by_id(dashboard, "lesion-add-toggle")).to_be_visible()

    by_id(dashboard, "nav-worklist").click()
    by_id(dashboard, "filter-patient").fill(patient)
    by_id(dashboard, "worklist-patient-link").click()

    expect(dashboard).to_have_url(f"{fleet.gateway_url}/#/patients/{patient}")
    expect(dashboard.locator("#patient-title")).to_have_text(f"Patient {patient}")


def test_on_a_phone_the_add_lesion_form_fits_the_width(
    phone_page: Page, fleet: Fleet, gateway: httpx.Client, key_a: str
) -> None:
    patient = new_patient()
    sign_in(phone_page, fleet.gateway_url, key_a)
    open_patient(phone_page, fleet, patient)
    by_id(phone_page, "lesion-add-toggle").click()
    click_outline(by_id(phone_page, "body-map-front"), 0.5, 0.5)
    by_id(phone_page, "lesion-label").fill("Abdomen")

    scroll_width = phone_page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= PHONE_WIDTH + 1, scroll_width
    by_id(phone_page, "lesion-submit").click()
    expect(by_id(phone_page, "lesion-added")).to_be_visible()
    [lesion] = lesions_of(gateway, key_a, patient)
    assert lesion["body_map"]["view"] == "front"
