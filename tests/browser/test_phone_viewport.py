"""On a phone (375 x 740) the upload form and the worklist fit the width: no sideways scrolling."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import JOB_TIMEOUT_MS, by_id, is_png, row_of, show_only_patient, sign_in
from tests.e2e.gateway_calls import bearer

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PHONE_WIDTH = 375
# For the failure message: the elements whose right edge passes the viewport's.
STICKING_OUT = """width => Array.from(document.querySelectorAll("body *"))
    .filter(e => e.getBoundingClientRect().right > width + 1)
    .slice(0, 10)
    .map(e => `${e.tagName.toLowerCase()}#${e.id}.${e.className} right=${e.getBoundingClientRect().right}`)"""


def test_on_a_phone_the_upload_form_and_worklist_show_without_horizontal_scrolling(
    phone_page: Page, fleet: Fleet, gateway: httpx.Client, key_a: str, ham_images: list[Path], artifacts: Path
) -> None:
    # A row with every optional field filled, so the table is as wide as it gets.
    path = ham_images[3]
    submitted = gateway.post(
        "/v1/images",
        files={"file": (path.name, path.read_bytes(), "image/jpeg")},
        data={"patient_ref": "PT-PHONE-0123456789", "body_site": "left lower leg, posterior", "age": "47"},
        headers=bearer(key_a),
    )
    assert submitted.status_code == 202, submitted.text

    sign_in(phone_page, fleet.gateway_url, key_a)
    show_only_patient(phone_page, "PT-PHONE-0123456789")

    expect(row_of(phone_page, submitted.json()["job_id"])).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(by_id(phone_page, "upload-form")).to_be_visible()
    expect(by_id(phone_page, "worklist")).to_be_visible()
    scroll_width = phone_page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll_width <= PHONE_WIDTH + 1, (scroll_width, phone_page.evaluate(STICKING_OUT, PHONE_WIDTH))
    shot = artifacts / "phone.png"
    phone_page.screenshot(path=shot, full_page=True)
    assert is_png(shot)
