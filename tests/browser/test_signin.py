"""Signing in to the dashboard with a tenant's API key, and out again; the header names the user and
role; an integrator's key (API only) is refused."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from bench.fleet_runner import Fleet
from tests.browser.dashboard import User, by_id, sign_in
from tests.e2e.gateway_calls import bearer

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


def test_the_header_names_the_signed_in_user_and_role(
    page: Page, fleet: Fleet, gateway: httpx.Client, key_a: str, clinician: User
) -> None:
    me = gateway.get("/v1/me", headers=bearer(key_a)).json()

    sign_in(page, fleet.gateway_url, key_a)
    expect(by_id(page, "whoami-name")).to_have_text(me["name"])
    expect(by_id(page, "whoami-role")).to_have_text("admin")
    expect(by_id(page, "nav-admin")).to_be_visible()
    by_id(page, "signout").click()

    sign_in(page, fleet.gateway_url, clinician.api_key)
    expect(by_id(page, "whoami-name")).to_have_text(clinician.name)
    expect(by_id(page, "whoami-role")).to_have_text("clinician")
    expect(by_id(page, "nav-admin")).to_be_hidden()


def test_an_integrators_key_is_refused_with_a_clear_message(
    page: Page, fleet: Fleet, integrator: User
) -> None:
    page.goto(fleet.gateway_url + "/")

    by_id(page, "signin-key").fill(integrator.api_key)
    by_id(page, "signin-submit").click()

    error = by_id(page, "signin-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-code", "dashboard.integrator_key")
    expect(error).to_contain_text("API only")
    expect(by_id(page, "worklist")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
