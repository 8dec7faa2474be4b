"""Fixtures for the inference worker: settings on the tiny bundles (format 1, and format 2 with
metadata fusion), a real HAM10000 image as the gateway would store it, and respx routes standing
in for the OOD and reports services."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
from PIL import Image

from contracts.jobs import InferenceTask, StoredImage
from contracts.notifications import JobFinished

# services.inference.celery_app reads its settings at import, as a worker does at start-up; these
# must exist before any test module imports it. Per-test settings are passed explicitly below.
TOKEN = "test-internal-token-0123456789"
OOD_URL = "http://ood.test"
REPORTS_URL = "http://reports.test"
os.environ.setdefault("INFERENCE_INTERNAL_TOKEN", TOKEN)
os.environ.setdefault("INFERENCE_BROKER_URL", "memory://")
os.environ.setdefault("INFERENCE_OOD_URL", OOD_URL)
os.environ.setdefault("INFERENCE_REPORTS_URL", REPORTS_URL)

from services.inference.config import Settings  # noqa: E402
from services.inference.resources import WorkerResources, close_resources, init_resources  # noqa: E402

JOB_ID = "job-0001"
TENANT_ID = "tenant-a"
REQUEST_ID = "req-0001"


def store_image(path: Path, fmt: str = "JPEG") -> StoredImage:
    """Re-encode an image the way the gateway stores uploads (orientation fixed, no metadata)."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format=fmt, quality=90)
    data = buffer.getvalue()
    return StoredImage(
        media_type="image/jpeg" if fmt == "JPEG" else "image/png",
        width=rgb.width,
        height=rgb.height,
        sha256=hashlib.sha256(data).hexdigest(),
        data_b64=base64.b64encode(data).decode("ascii"),
    )


def worker_settings(bundle_dir: Path) -> Settings:
    """Worker settings on a bundle, pointing at the respx-mocked services."""
    return Settings(
        bundle_dir=bundle_dir,
        internal_token=TOKEN,
        ood_url=OOD_URL,
        reports_url=REPORTS_URL,
        broker_url="memory://",
        http_timeout_seconds=2.0,
    )


@pytest.fixture
def settings(tiny_bundle_dir: Path) -> Settings:
    """Worker settings on the tiny (format 1) bundle."""
    return worker_settings(tiny_bundle_dir)


@pytest.fixture
def resources(settings: Settings) -> Iterator[WorkerResources]:
    """This process's Predictor and clients, as worker_process_init would build them."""
    yield init_resources(settings)
    close_resources()


@pytest.fixture
def stored_image(ham_images: list[Path]) -> StoredImage:
    """A real HAM10000 image re-encoded as the gateway stores it."""
    return store_image(ham_images[0])


@pytest.fixture
def job(stored_image: StoredImage) -> InferenceTask:
    """The task message for one job."""
    return InferenceTask(
        job_id=JOB_ID,
        tenant_id=TENANT_ID,
        request_id=REQUEST_ID,
        image=stored_image,
        submitted_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.fixture
def payload(job: InferenceTask) -> dict[str, Any]:
    """The JSON dict Celery delivers as the task's `payload` kwarg."""
    return job.model_dump(mode="json")


def verdict(
    decision: str = "accepted", rule: str | None = None, reasons: list[str] | None = None
) -> dict[str, Any]:
    """An OodScoreResponse body."""
    return {
        "scores": {"msp": 0.9 if decision == "accepted" else 0.15, "entropy": 0.3, "energy": -4.2},
        "decision": decision,
        "rule": rule,
        "reasons": reasons or [],
        "thresholds": {"msp_min": 0.2, "entropy_max": 0.97},
    }


@pytest.fixture
def mocked() -> Iterator[respx.MockRouter]:
    """respx router over every httpx call; routes: `ood`, `job_running`, `report_put`, `job_fail`."""
    with respx.mock(assert_all_called=False) as router:
        router.post(f"{OOD_URL}/v1/score", name="ood").respond(200, json=verdict())
        router.post(f"{REPORTS_URL}/internal/v1/jobs/running", name="job_running").respond(
            200, json={"changed": 1}
        )
        router.put(url__regex=rf"{REPORTS_URL}/internal/v1/reports/[^/]+$", name="report_put").respond(
            200, json={}
        )
        router.post(url__regex=rf"{REPORTS_URL}/internal/v1/jobs/[^/]+/fail$", name="job_fail").respond(
            200, json={}
        )
        yield router


class RecordingNotifier:
    """Keeps what the task would have published."""

    def __init__(self) -> None:
        self.sent: list[JobFinished] = []

    def notify(self, finished: list[JobFinished]) -> None:
        self.sent.extend(finished)

    def close(self) -> None:
        pass
