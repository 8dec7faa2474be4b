"""reports and ood keep their API description for operators: `/docs` and `/redoc` are off and
`/openapi.json` needs the internal token (issue 10)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.ood.api.app import create_app as create_ood
from services.ood.config import Settings as OodSettings
from services.reports.api.app import create_app as create_reports
from services.reports.config import Settings as ReportsSettings

TOKEN = "test-internal-token-0123456789"


@pytest.fixture(params=["reports", "ood"])
def internal(request: pytest.FixtureRequest, tmp_path: Path, tiny_bundle_dir: Path) -> Iterator[TestClient]:
    if request.param == "reports":
        app = create_reports(
            ReportsSettings(database_url=f"sqlite:///{tmp_path / 'r.db'}", internal_token=SecretStr(TOKEN))
        )
    else:
        app = create_ood(OodSettings(bundle_dir=tiny_bundle_dir, internal_token=SecretStr(TOKEN)))
    with TestClient(app) as client:
        yield client


def test_the_api_description_needs_the_internal_token_and_the_docs_pages_are_off(
    internal: TestClient,
) -> None:
    refused = internal.get("/openapi.json")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "auth.internal_token_invalid"

    served = internal.get("/openapi.json", headers={"X-Internal-Token": TOKEN})
    assert served.status_code == 200
    assert served.json()["paths"]

    for page in ("/docs", "/redoc"):
        assert internal.get(page, headers={"X-Internal-Token": TOKEN}).status_code == 404
