"""The admin page: monitoring plots (inline SVG), the audit trail showing a clinician's reads (with
filters and "load more"), and users and keys (a key is shown once and can be revoked). A clinician
neither sees the link nor the page."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import (
    URGENT_IMAGE,
    add_user,
    by_id,
    expect_report_of,
    new_patient,
    review,
    sign_in,
    submit_done,
)
from tests.e2e.gateway_calls import bearer

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.shipped_bundle]

AUDIT_PAGE = 50  # entries per audit page (the dashboard's page size)


def test_an_admin_sees_the_monitoring_plots_and_a_clinicians_reads_in_the_audit_trail(
    page: Page,
    fleet: Fleet,
    gateway: httpx.Client,
    key_a: str,
    ham_images: list[Path],
    artifacts: Path,
) -> None:
    # A clinician of this test's own, so the audit trail holds exactly the reads made here.
    clinician = add_user(gateway, key_a, "Dr Rosalind Franklin", "clinician")
    job = submit_done(gateway, key_a, ham_images[URGENT_IMAGE], patient_ref=new_patient(), body_site="back")
    # A confirmed melanoma the model called urgent: a sensitivity estimate with its interval.
    review(
        gateway,
        clinician.api_key,
        job["job_id"],
        "urgent",
        confirmed_diagnosis={"code": "mel", "text": None, "basis": "histopathology", "malignant": None},
    )
    # The clinician reads the report in the dashboard, then a page's worth of times by the API.
    sign_in(page, fleet.gateway_url, clinician.api_key)
    page.goto(f"{fleet.gateway_url}/#/jobs/{job['job_id']}")
    expect_report_of(page, job["job_id"])
    expect(page.get_by_test_id("review-item")).to_have_count(1)
    for _ in range(AUDIT_PAGE):
        assert gateway.get(f"/v1/jobs/{job['job_id']}", headers=bearer(clinician.api_key)).status_code == 200
    by_id(page, "report-close").click()
    by_id(page, "signout").click()

    sign_in(page, fleet.gateway_url, key_a)
    by_id(page, "nav-admin").click()

    expect(by_id(page, "admin-content")).to_be_visible()
    for chart in ("chart-ood", "chart-override", "chart-accuracy"):
        expect(by_id(page, chart)).to_be_visible()
    expect(by_id(page, "chart-ood").get_by_test_id("plot-point").first).to_be_attached()
    expect(by_id(page, "chart-override").get_by_test_id("plot-bar").first).to_be_attached()
    expect(by_id(page, "chart-accuracy").get_by_test_id("plot-whisker").first).to_be_attached()
    expect(page.get_by_test_id("monitoring-model-row").first).to_be_visible()
    expect(page.locator('[data-testid="monitoring-site-row"][data-key="back"]').first).to_be_visible()

    by_id(page, "audit-user").select_option(clinician.user_id)
    by_id(page, "audit-action").select_option("report.read")
    rows = page.get_by_test_id("audit-row")
    expect(rows).to_have_count(AUDIT_PAGE)
    expect(page.locator('[data-testid="audit-row"]:not([data-action="report.read"])')).to_have_count(0)
    expect(rows.first).to_have_attribute("data-user-id", clinician.user_id)
    expect(rows.first).to_have_attribute("data-resource-id", job["job_id"])
    expect(rows.first.get_by_test_id("audit-user-name")).to_contain_text(clinician.name)
    by_id(page, "audit-more").click()
    expect(rows).to_have_count(AUDIT_PAGE + 1)  # the dashboard's read, then the API's fifty
    expect(by_id(page, "audit-more")).to_be_hidden()
    page.screenshot(path=artifacts / "admin.png", full_page=True)


def test_an_admin_adds_a_user_makes_a_key_shown_once_and_revokes_it(
    dashboard: Page, gateway: httpx.Client
) -> None:
    by_id(dashboard, "nav-admin").click()
    by_id(dashboard, "user-name").fill("Dr Grace Hopper")
    by_id(dashboard, "user-role").select_option("clinician")
    by_id(dashboard, "user-submit").click()
    user_row = dashboard.locator('[data-testid="user-row"]', has_text="Dr Grace Hopper")
    expect(user_row).to_have_attribute("data-role", "clinician")

    user_row.get_by_test_id("user-make-key").click()

    shown = by_id(dashboard, "new-key-value")
    expect(shown).to_be_visible()
    api_key = shown.inner_text().strip()
    key_id = shown.get_attribute("data-key-id")
    assert gateway.get("/v1/me", headers=bearer(api_key)).json()["name"] == "Dr Grace Hopper"
    by_id(dashboard, "new-key-done").click()
    expect(by_id(dashboard, "new-key")).to_be_hidden()
    expect(dashboard.get_by_text(api_key)).to_have_count(0)

    revoke = dashboard.locator(f'[data-testid="key-revoke"][data-key-id="{key_id}"]')
    revoke.click()
    revoke.click()  # the second click confirms
    expect(dashboard.locator(f'[data-testid="key-row"][data-key-id="{key_id}"]')).to_have_attribute(
        "data-revoked", "true"
    )
    assert gateway.get("/v1/me", headers=bearer(api_key)).status_code == 401


def test_a_clinician_does_not_see_the_admin_page(clinician_dashboard: Page, fleet: Fleet) -> None:
    expect(by_id(clinician_dashboard, "nav-admin")).to_be_hidden()

    clinician_dashboard.goto(f"{fleet.gateway_url}/#/admin")

    expect(by_id(clinician_dashboard, "admin-denied")).to_be_visible()
    expect(by_id(clinician_dashboard, "admin-content")).to_be_hidden()
    expect(by_id(clinician_dashboard, "audit-table")).to_be_hidden()
