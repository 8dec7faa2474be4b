"""The dashboard in a real browser: Playwright (sync API) driving Debian's Chromium against the
real fleet (bench/fleet_runner.py) on the production shape, PostgreSQL + Redis, serving the
SHIPPED bundle, so a photo that is not skin is rejected by that bundle's own OOD detector.

Chromium comes from Debian (`apt-get install chromium`, see the Makefile's install target);
`playwright install` is never run, since it downloads browsers. Without /usr/bin/chromium the
browser tests skip, or fail under SKINTRIAGE_REQUIRE_SERVICES=1 (as PostgreSQL and Redis do).

Screenshots go to test-artifacts/browser/ (gitignored): the ones the tests take on purpose, and
one per failed test under failures/.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import skimage.data
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from bench.fleet_runner import (
    Backends,
    Fleet,
    flushed_redis_database,
    fresh_postgres_database,
)
from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from scripts.run_fleet import DEFAULT_BUNDLE, REPO_ROOT
from tests.browser.dashboard import User, add_user, sign_in
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service
from tests.e2e.fleet import PRODUCTION, TENANTS

SHIPPED_BUNDLE = REPO_ROOT / DEFAULT_BUNDLE
CHROMIUM = Path(os.environ.get("SKINTRIAGE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
# A Redis database of its own: bench 12, tests/e2e 13, the worker e2e 14, redis_url 15.
BROWSER_REDIS_DB = 11
# Without the background-networking flag Chromium keeps dialling Google's hosts, which this
# machine's closed network refuses; --no-sandbox because CI runs as root.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# A synthetic camera (a moving test pattern) and an auto-accepted permission prompt.
CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
DESKTOP_VIEWPORT = {"width": 1280, "height": 900}
EXPECT_TIMEOUT_MS = 10_000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "shipped_bundle: uses models/skintriage-effnet-lite0/2.0.1 and fails (never skips) without it",
    )
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Keep each phase's report on the item (the page fixture screenshots a failed call) and
    attach the fleet's process logs to a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Fleet):
                report.sections.append(("fleet process logs", value.logs()))
    return report


@pytest.fixture(scope="package")
def shipped_manifest() -> BundleManifest:
    """The shipped bundle's manifest; it must carry the OOD detector the rejection tests rely on."""
    try:
        manifest = load_manifest(SHIPPED_BUNDLE)
    except Exception as exc:
        pytest.fail(f"the shipped bundle {DEFAULT_BUNDLE} is missing or invalid: {exc}", pytrace=False)
    if manifest.ood_detector is None:
        pytest.fail(f"the shipped bundle {DEFAULT_BUNDLE} has no ood_detector (make fit-ood)", pytrace=False)
    return manifest


@contextmanager
def _production_backends() -> Iterator[Backends]:
    """A fresh PostgreSQL database (dropped afterwards) and this package's flushed Redis database."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    with (
        fresh_postgres_database(POSTGRES_URL, prefix="skintriage_browser") as database_url,
        flushed_redis_database(REDIS_URL, BROWSER_REDIS_DB) as broker_url,
    ):
        yield Backends("postgres-redis", database_url, broker_url)


@pytest.fixture(scope="package", params=[PRODUCTION])
def fleet(
    request: pytest.FixtureRequest, shipped_manifest: BundleManifest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """The whole fleet on the shipped bundle, once for every test under tests/browser."""
    workdir = tmp_path_factory.mktemp("fleet-browser")
    with _production_backends() as backends, Fleet(backends, SHIPPED_BUNDLE, workdir, TENANTS) as started:
        yield started
        started.check_alive()


@pytest.fixture(scope="package")
def gateway(fleet: Fleet) -> Iterator[httpx.Client]:
    """An HTTP client for the public gateway, for setting up jobs without the browser."""
    with httpx.Client(base_url=fleet.gateway_url, timeout=60.0, trust_env=False) as client:
        yield client


@pytest.fixture(scope="package")
def key_a(fleet: Fleet) -> str:
    return fleet.api_keys[TENANTS[0]]


@pytest.fixture(scope="package")
def key_b(fleet: Fleet) -> str:
    return fleet.api_keys[TENANTS[1]]


@pytest.fixture(scope="package")
def clinician(gateway: httpx.Client, key_a: str) -> User:
    """A clinician of tenant-a (the fixture's tenant key acts as the tenant's admin)."""
    return add_user(gateway, key_a, "Dr Ada Lovelace", "clinician")


@pytest.fixture(scope="package")
def integrator(gateway: httpx.Client, key_a: str) -> User:
    """An integrator of tenant-a: an EHR's key, API only."""
    return add_user(gateway, key_a, "EHR bridge", "integrator")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """test-artifacts/browser/: screenshots the tests leave for people to look at (the failure
    screenshots of an earlier run are removed, so what is there belongs to this run)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(ARTIFACTS / "failures", ignore_errors=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def non_skin_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """skimage's astronaut portrait (512 x 512) as a JPEG: a photo, but not of a skin lesion."""
    path = tmp_path_factory.mktemp("non-skin") / "astronaut.jpg"
    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).save(buffer, "JPEG", quality=92)
    path.write_bytes(buffer.getvalue())
    return path


def _require_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    message = f"Chromium not found at {CHROMIUM} (apt-get install chromium; see make install)"
    if os.environ.get("SKINTRIAGE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} and SKINTRIAGE_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


# Package scope, not session: while the sync API is started its event loop counts as running in
# this thread, and every async test after tests/browser would fail with "Runner.run() cannot be
# called from a running event loop".
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    _require_chromium()
    with sync_playwright() as started:
        yield started


def _launch(playwright: Playwright, extra_args: list[str]) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS + extra_args)


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium."""
    launched = _launch(playwright, [])
    yield launched
    launched.close()


@pytest.fixture(scope="package")
def camera_browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Debian Chromium with a fake camera that needs no permission prompt."""
    launched = _launch(playwright, CAMERA_ARGS)
    yield launched
    launched.close()


def _record_on_failure(
    request: pytest.FixtureRequest, page: Page, artifacts: Path, console: list[str]
) -> None:
    """A full-page screenshot under failures/ and the page's console errors in the report."""
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed:
        return
    if console:
        report.sections.append(("browser console", "\n".join(console)))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    failures = artifacts / "failures"
    failures.mkdir(exist_ok=True)
    try:
        page.screenshot(path=failures / f"{name}.png", full_page=True)
    except Exception as exc:  # a crashed page must not hide the test's own failure
        report.sections.append(("screenshot", f"no screenshot: {exc}"))


@contextmanager
def _page_in(
    browser: Browser, request: pytest.FixtureRequest, artifacts: Path, **options: Any
) -> Iterator[Page]:
    context: BrowserContext = browser.new_context(**options)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"uncaught: {error}"))
    try:
        yield page
    finally:
        _record_on_failure(request, page, artifacts, console)
        context.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, artifacts: Path) -> Iterator[Page]:
    """A fresh tab in its own context (own sessionStorage); screenshot saved if the test fails."""
    with _page_in(browser, request, artifacts, viewport=DESKTOP_VIEWPORT) as opened:
        yield opened


@pytest.fixture
def dashboard(page: Page, fleet: Fleet, key_a: str) -> Page:
    """The dashboard, signed in with tenant-a's key."""
    sign_in(page, fleet.gateway_url, key_a)
    return page


@pytest.fixture
def clinician_dashboard(page: Page, fleet: Fleet, clinician: User) -> Page:
    """The dashboard, signed in with the clinician's key."""
    sign_in(page, fleet.gateway_url, clinician.api_key)
    return page


@pytest.fixture
def phone_page(browser: Browser, request: pytest.FixtureRequest, artifacts: Path) -> Iterator[Page]:
    """A phone-sized tab (375 x 740, touch, mobile scaling)."""
    with _page_in(
        browser,
        request,
        artifacts,
        viewport={"width": 375, "height": 740},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    ) as opened:
        yield opened


@pytest.fixture
def camera_page(
    camera_browser: Browser, request: pytest.FixtureRequest, artifacts: Path, fleet: Fleet
) -> Iterator[Page]:
    """A tab allowed to use the (fake) camera on the gateway's origin."""
    with _page_in(camera_browser, request, artifacts, viewport=DESKTOP_VIEWPORT) as opened:
        opened.context.grant_permissions(["camera"], origin=fleet.gateway_url)
        yield opened
