"""The worklist's default order is priority: unreviewed urgent results first, then the other
unreviewed ones, then the reviewed; within each, the longest waiting first. Rows show display
names and their review state, and the review-state filter narrows the list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.dashboard import (
    MONITOR_IMAGE,
    URGENT_IMAGE,
    User,
    by_id,
    new_patient,
    review,
    row_of,
    show_only_patient,
    submit_done,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.shipped_bundle]


@pytest.fixture(scope="module")
def patient_jobs(
    gateway: httpx.Client, key_a: str, clinician: User, ham_images: list[Path]
) -> dict[str, dict[str, Any]]:
    """One patient's four results, submitted in this order: an urgent one the clinician then
    reviews, a monitor one, and two more urgent ones."""
    patient = new_patient()
    jobs: dict[str, dict[str, Any]] = {}
    for name, index in (
        ("reviewed", URGENT_IMAGE),
        ("monitor", MONITOR_IMAGE),
        ("urgent1", URGENT_IMAGE),
        ("urgent2", URGENT_IMAGE),
    ):
        jobs[name] = submit_done(gateway, key_a, ham_images[index], patient_ref=patient)
    levels = {name: job["result"]["triage_level"] for name, job in jobs.items()}
    assert levels == {"reviewed": "urgent", "monitor": "monitor", "urgent1": "urgent", "urgent2": "urgent"}
    review(gateway, clinician.api_key, jobs["reviewed"]["job_id"], "urgent")
    return jobs


def _shown_order(page: Page) -> list[str | None]:
    rows = page.get_by_test_id("worklist-row")
    return [rows.nth(i).get_attribute("data-job-id") for i in range(rows.count())]


def test_unreviewed_urgent_results_come_first_then_the_longest_waiting(
    dashboard: Page, patient_jobs: dict[str, dict[str, Any]]
) -> None:
    ids = {name: job["job_id"] for name, job in patient_jobs.items()}
    rows = dashboard.get_by_test_id("worklist-row")
    expect(by_id(dashboard, "filter-sort")).to_have_value("priority")

    show_only_patient(dashboard, patient_jobs["reviewed"]["metadata"]["patient_ref"])

    expect(rows).to_have_count(4)
    expect(row_of(dashboard, ids["reviewed"])).to_have_attribute("data-review-state", "signed_off")
    assert _shown_order(dashboard) == [ids["urgent1"], ids["urgent2"], ids["monitor"], ids["reviewed"]]
    by_id(dashboard, "filter-sort").select_option("newest")
    expect(rows.first).to_have_attribute("data-job-id", ids["urgent2"])
    assert _shown_order(dashboard) == [ids["urgent2"], ids["urgent1"], ids["monitor"], ids["reviewed"]]


def test_rows_show_display_names_and_the_review_state_filter_narrows_them(
    dashboard: Page, patient_jobs: dict[str, dict[str, Any]]
) -> None:
    rows = dashboard.get_by_test_id("worklist-row")
    show_only_patient(dashboard, patient_jobs["reviewed"]["metadata"]["patient_ref"])
    expect(rows).to_have_count(4)
    prediction = patient_jobs["monitor"]["result"]["prediction"]
    top_name = prediction["class_display_names"][prediction["top_class"]]
    expect(row_of(dashboard, patient_jobs["monitor"]["job_id"])).to_contain_text(top_name)

    by_id(dashboard, "filter-review").select_option("signed_off")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", patient_jobs["reviewed"]["job_id"])
    by_id(dashboard, "filter-review").select_option("unreviewed")
    expect(rows).to_have_count(3)
    expect(
        dashboard.locator('[data-testid="worklist-row"]:not([data-review-state="unreviewed"])')
    ).to_have_count(0)
