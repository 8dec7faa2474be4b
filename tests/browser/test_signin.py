"""Signing in to the dashboard with a tenant's API key, and out again."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import by_id, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_signing_in_with_the_tenants_key_shows_the_worklist_and_upload_form(
    page: Page, fleet: Fleet, key_a: str
) -> None:
    sign_in(page, fleet.gateway_url, key_a)

    expect(by_id(page, "signin-form")).to_be_hidden()
    expect(by_id(page, "upload-form")).to_be_visible()
    expect(by_id(page, "signout")).to_be_visible()


def test_a_wrong_key_shows_signin_error_and_stays_on_the_signin_form(page: Page, fleet: Fleet) -> None:
    page.goto(fleet.gateway_url + "/")

    by_id(page, "signin-key").fill("st_not-a-real-key-0123456789")
    by_id(page, "signin-submit").click()

    expect(by_id(page, "signin-error")).to_be_visible()
    expect(by_id(page, "signin-error")).not_to_be_empty()
    expect(by_id(page, "signin-form")).to_be_visible()
    expect(by_id(page, "worklist")).to_be_hidden()


def test_signing_out_returns_to_the_signin_form_and_forgets_the_key(
    page: Page, fleet: Fleet, key_a: str
) -> None:
    sign_in(page, fleet.gateway_url, key_a)

    by_id(page, "signout").click()

    expect(by_id(page, "signin-form")).to_be_visible()
    expect(by_id(page, "worklist")).to_be_hidden()
    page.reload()
    expect(by_id(page, "signin-form")).to_be_visible()
    expect(by_id(page, "worklist")).to_be_hidden()
