"""The heatmap endpoint the dashboard's overlay uses, on the shipped bundle through the fleet:
a PNG exactly as large as the stored image (so it lies over it pixel for pixel). That another
tenant gets 404 for it is tests/e2e/test_fleet.py's test_tenant_b_gets_404_for_tenant_a_job."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.browser.dashboard import PNG_SIGNATURE
from tests.e2e.gateway_calls import bearer, submit_image

pytestmark = [pytest.mark.e2e, pytest.mark.shipped_bundle]


def test_the_heatmap_is_a_png_of_the_stored_images_size(
    gateway: httpx.Client, key_a: str, ham_images: list[Path]
) -> None:
    path = ham_images[1]  # accepted by the shipped bundle (ISIC_0024307)
    job = submit_image(gateway, key_a, path.name, path.read_bytes(), Prefer="wait=30").json()
    assert job["status"] == "done", job

    heatmap = gateway.get(f"/v1/jobs/{job['job_id']}/heatmap.png", headers=bearer(key_a))
    image = gateway.get(f"/v1/jobs/{job['job_id']}/image", headers=bearer(key_a))

    assert heatmap.status_code == 200, heatmap.text
    assert image.status_code == 200, image.text
    assert heatmap.headers["content-type"] == "image/png"
    assert heatmap.content.startswith(PNG_SIGNATURE)
    overlay = Image.open(io.BytesIO(heatmap.content))
    assert overlay.format == "PNG" and overlay.mode == "RGBA"
    assert overlay.size == Image.open(io.BytesIO(image.content)).size
