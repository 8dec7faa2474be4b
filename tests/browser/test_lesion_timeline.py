"""A lesion imaged twice: its report links to the lesion, whose timeline shows both images side by
side, oldest first, with the change flags between them; the patient's body map shows the lesion as
a dot that leads back to its timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import (
    MONITOR_IMAGE,
    URGENT_IMAGE,
    by_id,
    expect_report_of,
    new_patient,
    submit_done,
)
from tests.e2e.gateway_calls import bearer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.shipped_bundle]

FLAGS = ("malignancy_changed", "appearance_changed", "size_changed")


@pytest.fixture(scope="module")
def lesion(gateway: httpx.Client, key_a: str, ham_images: list[Path]) -> dict[str, Any]:
    """A lesion on the back of the left shoulder, imaged twice (monitor, then urgent)."""
    created = gateway.post(
        "/v1/lesions",
        json={
            "patient_ref": new_patient(),
            "label": "Shoulder naevus",
            "body_site": "shoulder",
            "laterality": "left",
            "body_map": {"view": "back", "x": 0.3, "y": 0.25},
        },
        headers=bearer(key_a),
    )
    assert created.status_code == 201, created.text
    view: dict[str, Any] = created.json()
    jobs = [
        submit_done(
            gateway, key_a, ham_images[index], patient_ref=view["patient_ref"], lesion_id=view["lesion_id"]
        )
        for index in (MONITOR_IMAGE, URGENT_IMAGE)
    ]
    detail = gateway.get(f"/v1/lesions/{view['lesion_id']}", headers=bearer(key_a))
    assert detail.status_code == 200, detail.text
    return {"lesion": view, "jobs": jobs, "detail": detail.json()}


def test_the_timeline_shows_both_images_side_by_side_oldest_first_with_the_change(
    dashboard: Page, fleet: Fleet, lesion: dict[str, Any], artifacts: Path
) -> None:
    first, second = (job["job_id"] for job in lesion["jobs"])
    dashboard.goto(f"{fleet.gateway_url}/#/jobs/{second}")
    expect_report_of(dashboard, second)

    by_id(dashboard, "report-lesion-link").click()

    expect(by_id(dashboard, "lesion-view")).to_be_visible()
    expect(dashboard).to_have_url(f"{fleet.gateway_url}/#/lesions/{lesion['lesion']['lesion_id']}")
    images = dashboard.get_by_test_id("lesion-image")
    expect(images).to_have_count(2)
    assert [images.nth(i).get_attribute("data-job-id") for i in range(2)] == [first, second]
    for i in range(2):
        thumb = images.nth(i).get_by_test_id("lesion-thumb")
        dashboard.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    left, right = (images.nth(i).bounding_box() for i in range(2))
    assert left and right and left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 1
    expect(images.nth(0).get_by_test_id("lesion-image-triage")).to_have_text("monitor")
    expect(images.nth(1).get_by_test_id("lesion-image-triage")).to_have_text("urgent")

    change = dashboard.get_by_test_id("lesion-change")
    expect(change).to_have_count(1)
    expect(change).to_have_attribute("data-from", first)
    expect(change).to_have_attribute("data-to", second)
    expected = lesion["detail"]["changes"][0]["flags"]
    expect(change).to_have_attribute("data-changed", str(expected["changed"]).lower())
    assessed = any(expected[flag] is not None for flag in FLAGS)
    # The browser fleet serves the shipped bundle, whose change calibration reports reads by
    # default: the change is assessed, not merely shown as "not assessed".
    assert assessed, expected
    verdict = (
        "Changed" if expected["changed"] else "No change detected" if assessed else "Change not assessed"
    )
    expect(change.get_by_test_id("lesion-change-verdict")).to_have_text(verdict)
    for flag in FLAGS:
        value = expected[flag]
        expect(change.locator(f'[data-flag="{flag}"]')).to_have_attribute(
            "data-value", "null" if value is None else str(value).lower()
        )
    dashboard.screenshot(path=artifacts / "lesion-timeline.png", full_page=True)


def test_the_body_map_shows_the_lesion_and_leads_to_its_timeline(
    dashboard: Page, fleet: Fleet, lesion: dict[str, Any]
) -> None:
    lesion_id = lesion["lesion"]["lesion_id"]
    dashboard.goto(f"{fleet.gateway_url}/#/lesions/{lesion_id}")
    by_id(dashboard, "lesion-patient-link").click()

    expect(by_id(dashboard, "patient-view")).to_be_visible()
    dot = by_id(dashboard, "body-map-back").locator(
        f'[data-testid="body-map-dot"][data-lesion-id="{lesion_id}"]'
    )
    expect(dot).to_be_visible()
    expect(by_id(dashboard, "body-map-front").get_by_test_id("body-map-dot")).to_have_count(0)
    expect(by_id(dashboard, "patient-lesions")).to_contain_text("Shoulder naevus")

    dot.click()

    expect(by_id(dashboard, "lesion-view")).to_be_visible()
    expect(by_id(dashboard, "lesion-view")).to_have_attribute("data-lesion-id", lesion_id)
