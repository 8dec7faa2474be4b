"""Lazy heatmaps: the worker stores the quantised class-activation map; the reports service renders
the PNG on the first request, keeps it, and serves the kept bytes from then on (both backends)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts.reports import HeatmapSource
from model_bundle.heatmap import heatmap_png, heatmap_source, render_heatmap
from model_bundle.preprocessing import Placement
from services.reports.db.models import Report
from tests.reports.factories import PNG_BYTES, job_body, report_body, tenant_headers

JOBS = "/internal/v1/jobs"
# A 224 x 168 letterboxed input holding a 200 x 150 image, as the 2.0 bundle places it.
WHERE = Placement(rotated=False, left=0.0, top=0.0, width=224.0, height=168.0)


def _source(seed: int) -> HeatmapSource:
    cam = np.random.default_rng(seed).random((6, 7)).astype(np.float32)
    return heatmap_source(cam, 200, 150, (168, 224), WHERE)


def _put(client: TestClient, tenant: str, job_id: str, **body: Any) -> None:
    response = client.put(
        f"/internal/v1/reports/{job_id}",
        json=report_body(tenant, job_id) | body,
        headers=tenant_headers(tenant),
    )
    assert response.status_code == 200, response.text


def _stored_png(db: Session, job_id: str) -> bytes | None:
    db.expire_all()
    return db.scalar(select(Report.heatmap_png).where(Report.job_id == job_id))


@pytest.fixture
def job_id(client: TestClient, tenant: str) -> str:
    response = client.post(JOBS, json=job_body(tenant, job_id="job_lazy"), headers=tenant_headers(tenant))
    assert response.status_code == 201, response.text
    return "job_lazy"


def test_render_heatmap_is_byte_identical_to_heatmap_png_on_the_float_map() -> None:
    cam = np.random.default_rng(3).random((6, 7)).astype(np.float32)
    turned = Placement(rotated=True, left=28.0, top=0.0, width=168.0, height=168.0)
    for where in (WHERE, turned):
        eager = heatmap_png(cam, 200, 150, (168, 224), where)
        assert render_heatmap(heatmap_source(cam, 200, 150, (168, 224), where)) == eager


def test_the_first_request_renders_the_png_and_keeps_it(
    client: TestClient, db: Session, tenant: str, job_id: str
) -> None:
    source = _source(1)
    _put(client, tenant, job_id, heatmap=source.model_dump())
    assert _stored_png(db, job_id) is None  # nothing rendered at upsert time
    view = client.get(f"{JOBS}/{job_id}", headers=tenant_headers(tenant)).json()
    assert view["result"]["has_heatmap"] is True

    first = client.get(f"{JOBS}/{job_id}/heatmap.png", headers=tenant_headers(tenant))

    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png"
    assert first.content == render_heatmap(source)
    assert _stored_png(db, job_id) == first.content
    second = client.get(f"{JOBS}/{job_id}/heatmap.png", headers=tenant_headers(tenant))
    assert second.content == first.content


def test_a_late_redelivery_keeps_the_first_heatmap(
    client: TestClient, db: Session, tenant: str, job_id: str
) -> None:
    _put(client, tenant, job_id, heatmap=_source(1).model_dump())
    before = client.get(f"{JOBS}/{job_id}/heatmap.png", headers=tenant_headers(tenant)).content

    _put(client, tenant, job_id, heatmap=_source(2).model_dump())

    assert _stored_png(db, job_id) == before
    after = client.get(f"{JOBS}/{job_id}/heatmap.png", headers=tenant_headers(tenant)).content
    assert after == before == render_heatmap(_source(1))


def test_a_ready_made_png_from_an_older_worker_is_still_served(
    client: TestClient, tenant: str, job_id: str
) -> None:
    _put(
        client,
        tenant,
        job_id,
        heatmap_png_b64=report_body(tenant, job_id, heatmap=PNG_BYTES)["heatmap_png_b64"],
    )
    response = client.get(f"{JOBS}/{job_id}/heatmap.png", headers=tenant_headers(tenant))
    assert response.content == PNG_BYTES


@pytest.mark.parametrize(
    "change",
    [
        {"cam_u8_b64": "AAEC"},  # 3 bytes for a 6 x 7 map
        {"cam_u8_b64": "not base64!"},
    ],
)
def test_a_map_that_could_not_be_rendered_is_refused_when_stored(
    client: TestClient, tenant: str, job_id: str, change: dict[str, Any]
) -> None:
    body = report_body(tenant, job_id) | {"heatmap": _source(1).model_dump() | change}
    response = client.put(f"/internal/v1/reports/{job_id}", json=body, headers=tenant_headers(tenant))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "report.invalid"


def test_an_oversized_map_is_refused_by_the_contract(client: TestClient, tenant: str, job_id: str) -> None:
    body = report_body(tenant, job_id) | {"heatmap": _source(1).model_dump() | {"rows": 65}}
    response = client.put(f"/internal/v1/reports/{job_id}", json=body, headers=tenant_headers(tenant))
    assert response.status_code == 422
