"""Log lines carry only listed fields, so a field a service logs but never listed would vanish
silently: every `extra=` key written in a service's code must be listed for that service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from services.common.json_logging import COMMON_FIELDS
from services.gateway.api.app import LOG_FIELDS as GATEWAY_FIELDS
from services.inference.json_logging import LOG_FIELDS as INFERENCE_FIELDS
from services.ood.api.app import LOG_FIELDS as OOD_FIELDS
from services.reports.api.app import LOG_FIELDS as REPORTS_FIELDS

SERVICES_DIR = Path(__file__).resolve().parents[2] / "services"
LISTED = {
    "common": (),
    "gateway": GATEWAY_FIELDS,
    "inference": INFERENCE_FIELDS,
    "ood": OOD_FIELDS,
    "reports": REPORTS_FIELDS,
}


def _extra_keys(package: Path) -> set[str]:
    """Literal keys of every `extra={...}` dict passed to a call in the package."""
    keys = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                    keys.update(k.value for k in keyword.value.keys if isinstance(k, ast.Constant))
    return keys


@pytest.mark.parametrize("service", sorted(LISTED))
def test_every_field_a_service_logs_is_listed_for_it(service: str) -> None:
    logged = _extra_keys(SERVICES_DIR / service)

    assert logged - COMMON_FIELDS - set(LISTED[service]) == set()


def test_every_service_package_is_checked_and_the_scan_sees_fields() -> None:
    packages = {p.name for p in SERVICES_DIR.iterdir() if (p / "__init__.py").exists()}

    assert packages == set(LISTED)
    assert {"request_id", "route", "duration_ms"} <= _extra_keys(SERVICES_DIR / "common")
