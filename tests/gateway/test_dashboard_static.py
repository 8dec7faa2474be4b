"""The clinician dashboard: static files served at `/` without a key; the API still needs one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.gateway.api.app import DASHBOARD_DIR, create_app
from services.gateway.config import Settings
from tests.gateway.conftest import error_code
from tests.gateway.fakes import FakeReports, InMemoryPublisher

# Any absolute http(s) URL; the dashboard must load nothing from another host (no CDN). The SVG
# namespace name is an identifier that is never fetched (document.createElementNS needs it).
_ABSOLUTE_URL = re.compile(r"https?://(?!www\.w3\.org/2000/svg\b)", re.IGNORECASE)
_ASSETS = sorted(p.relative_to(DASHBOARD_DIR).as_posix() for p in DASHBOARD_DIR.rglob("*") if p.is_file())


@pytest.fixture
async def anonymous(
    settings: Settings, publisher: InMemoryPublisher, reports: FakeReports
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app that sends no API key."""
    app = create_app(settings, publisher=publisher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


async def test_root_serves_the_dashboard_html_without_a_key(anonymous: httpx.AsyncClient):
    response = await anonymous.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'data-testid="signin-form"' in response.text
    assert "not a diagnosis" in response.text


_CSS = {"text/css"}
# Browsers refuse ES modules unless served with a JavaScript MIME type.
_JAVASCRIPT = {"text/javascript", "application/javascript"}


@pytest.mark.parametrize(
    ("path", "content_types"),
    [("styles.css", _CSS), ("js/app.js", _JAVASCRIPT), ("js/api.js", _JAVASCRIPT)],
)
async def test_assets_have_their_content_types(
    anonymous: httpx.AsyncClient, path: str, content_types: set[str]
):
    response = await anonymous.get(f"/{path}")

    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in content_types
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", _ASSETS)
async def test_no_asset_refers_to_another_host(anonymous: httpx.AsyncClient, path: str):
    response = await anonymous.get(f"/{path}")

    assert response.status_code == 200
    assert not _ABSOLUTE_URL.search(response.text), f"{path} names an absolute URL"


async def test_dashboard_pages_forbid_loading_from_elsewhere(anonymous: httpx.AsyncClient):
    response = await anonymous.get("/")

    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy


@pytest.mark.parametrize("path", ["/v1/reports", "/v1/jobs/job-1", "/v1/jobs/job-1/image", "/v1/batches/b-1"])
async def test_api_routes_still_need_a_key(anonymous: httpx.AsyncClient, path: str):
    response = await anonymous.get(path)

    assert response.status_code == 401
    assert error_code(response) == "auth.missing_api_key"


async def test_api_routes_keep_priority_over_the_dashboard(client: httpx.AsyncClient, reports: FakeReports):
    response = await client.get("/healthz")

    assert response.json()["status"] == "ok"


async def test_unknown_path_is_a_json_not_found(anonymous: httpx.AsyncClient):
    response = await anonymous.get("/v1/nothing-here")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


async def test_api_post_to_unknown_path_is_not_served_by_the_dashboard(anonymous: httpx.AsyncClient):
    response = await anonymous.post("/index.html", content=b"x")

    assert response.status_code == 405


# The dashboard has no build step, so nothing else checks that its modules fit together: every
# relative import names a module that exists and exports that name, and every `$("#id")` lookup
# names an element of index.html (a typo there would only show as a broken page).
_JS_DIR = DASHBOARD_DIR / "js"
_MODULES = sorted(_JS_DIR.glob("*.js"))
_NAMED_IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./([^"]+)";', re.MULTILINE)
_ANY_IMPORT = re.compile(r'^import\b[^;]*?\sfrom\s*"([^"]+)";', re.MULTILINE)
_ID_LOOKUP = re.compile(r'\$\("#([A-Za-z0-9_-]+)"\)')
_EXPORT = r"export\s+(?:async\s+)?(?:function|const|let|class)\s+{name}(?![\w$])"


@pytest.mark.parametrize("module", _MODULES, ids=lambda path: path.name)
def test_every_import_names_an_export_of_a_sibling_module(module: Path) -> None:
    source = module.read_text(encoding="utf-8")

    for target in _ANY_IMPORT.findall(source):
        assert target.startswith("./") and (_JS_DIR / target[2:]).is_file(), f"{module.name} imports {target}"
    for names, target in _NAMED_IMPORT.findall(source):
        exporter = (_JS_DIR / target).read_text(encoding="utf-8")
        for name in (part.split(" as ")[0].strip() for part in names.split(",")):
            if name:
                pattern = _EXPORT.format(name=re.escape(name))
                assert re.search(pattern, exporter), f"{module.name}: {target} exports no {name}"


@pytest.mark.parametrize("module", _MODULES, ids=lambda path: path.name)
def test_every_element_a_module_looks_up_by_id_is_in_the_page(module: Path) -> None:
    page_ids = set(re.findall(r'\bid="([^"]+)"', (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8")))
    source = module.read_text(encoding="utf-8")

    missing = sorted(set(_ID_LOOKUP.findall(source)) - page_ids)

    assert not missing, f"{module.name} looks up ids index.html lacks: {missing}"


@pytest.mark.parametrize("module", _MODULES, ids=lambda path: path.name)
def test_no_module_writes_markup_from_strings(module: Path) -> None:
    # API values (names, notes, patient refs) may hold anything: text goes in as text nodes.
    source = module.read_text(encoding="utf-8")

    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", source)


@pytest.mark.parametrize("route", ["#/admin", "#/lesions/", "#/patients/", "#/jobs/"])
async def test_the_page_routes_of_issue_12_are_handled_by_the_app(
    anonymous: httpx.AsyncClient, route: str
) -> None:
    response = await anonymous.get("/js/app.js")

    assert response.status_code == 200
    assert route.replace("/", "\\/") in response.text
