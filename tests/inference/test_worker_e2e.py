"""A real Celery worker process, the real OOD service under uvicorn, and a recording stub standing
in for the reports service: a task sent with `send_task` ends as a stored report. Run on Redis
(production) and on kombu's SQLAlchemy transport over SQLite (the embedded default)."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import uvicorn
from celery import Celery
from fastapi import FastAPI, Request
from PIL import Image

from contracts.jobs import InferenceTask, StoredImage
from model_bundle.loader import load_manifest
from tests.inference.conftest import store_image

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "e2e-internal-token-0123456789"
E2E_REDIS_DB = 14  # a database of its own, flushed before and after
REPORT_TIMEOUT_S = 45.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until(ready: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    pytest.fail(f"{what} not ready within {timeout:.0f} s\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (warm shutdown), then SIGKILL if it lingers: only the process this test started."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Recorded:
    """What the reports stub received."""

    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def puts(self) -> list[tuple[str, str, dict[str, str], Any]]:
        with self.lock:
            return [c for c in self.calls if c[0] == "PUT"]


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "sqlite"])
def e2e_broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The CI Redis on a database of its own, empty before and after; or a fresh SQLite broker."""
    if request.param == "sqlite":
        (tmp_path / "var").mkdir()
        yield f"sqla+sqlite:///{tmp_path / 'var' / 'celery-broker.db'}"
        return
    redis_url: str = request.getfixturevalue("redis_url")
    parts = urlsplit(redis_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{E2E_REDIS_DB}", "", ""))
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def reports_stub() -> Iterator[tuple[str, Recorded]]:
    """A minimal FastAPI app that records the worker's calls to the reports service."""
    recorded = Recorded()
    app = FastAPI()

    async def record(request: Request) -> dict[str, str]:
        body = await request.json() if await request.body() else None
        with recorded.lock:
            recorded.calls.append((request.method, request.url.path, dict(request.headers), body))
        return {}

    app.add_api_route("/internal/v1/reports/{job_id}", record, methods=["PUT"])
    app.add_api_route("/internal/v1/jobs/running", record, methods=["POST"])
    app.add_api_route("/internal/v1/jobs/{job_id}/fail", record, methods=["POST"])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_until(lambda: server.started, 10, "reports stub")
    yield f"http://127.0.0.1:{port}", recorded
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def ood_url(tiny_bundle_dir: Path, tmp_path: Path) -> Iterator[str]:
    """The real OOD service on the tiny bundle, under uvicorn in its own process."""
    port = _free_port()
    log = tmp_path / "ood.log"
    env = os.environ | {"OOD_BUNDLE_DIR": str(tiny_bundle_dir), "OOD_INTERNAL_TOKEN": TOKEN}
    command = [sys.executable, "-m", "uvicorn", "--factory", "services.ood.api.app:create_app"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"OOD service exited with {process.returncode}\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        _wait_until(ready, 30, "OOD service", log)
        yield url
    finally:
        _stop(process)


@pytest.fixture
def worker_log(
    e2e_broker_url: str,
    ood_url: str,
    reports_stub: tuple[str, Recorded],
    tiny_bundle_dir: Path,
    tmp_path: Path,
) -> Iterator[Path]:
    """A real `celery worker --pool solo -Q inference` process; yields its log file."""
    log = tmp_path / "worker.log"
    env = os.environ | {
        "INFERENCE_BROKER_URL": e2e_broker_url,
        "INFERENCE_BUNDLE_DIR": str(tiny_bundle_dir),
        "INFERENCE_OOD_URL": ood_url,
        "INFERENCE_REPORTS_URL": reports_stub[0],
        "INFERENCE_INTERNAL_TOKEN": TOKEN,
        "INFERENCE_HTTP_TIMEOUT_SECONDS": "4",
    }
    command = [sys.executable, "-m", "celery", "-A", "services.inference.celery_app:celery_app", "worker"]
    options = [
        "--pool",
        "solo",
        "-Q",
        "inference",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *options, "--loglevel", "INFO", "--hostname", f"e2e-{os.getpid()}@%h"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"worker exited with {process.returncode}\n{log.read_text()[-4000:]}")
        return b" ready." in log.read_bytes()

    try:
        _wait_until(ready, 40, "worker", log)
        yield log
    finally:
        _stop(process)


def _flat_grey_image() -> StoredImage:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), (128, 128, 128)).save(buffer, format="PNG")
    data = buffer.getvalue()
    return StoredImage(
        media_type="image/png",
        width=400,
        height=300,
        sha256=hashlib.sha256(data).hexdigest(),
        data_b64=base64.b64encode(data).decode("ascii"),
    )


def _send(broker_url: str, job_id: str, image: StoredImage) -> None:
    """Queue the task as the gateway does: task id = job id, payload kwarg, request_id header."""
    task = InferenceTask(
        job_id=job_id, tenant_id="tenant-e2e", request_id=None, image=image, submitted_at=datetime.now(UTC)
    )
    client = Celery("e2e-gateway", broker=broker_url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        client.send_task(
            "inference.predict",
            kwargs={"payload": task.model_dump(mode="json")},
            task_id=job_id,
            queue="inference",
            headers={"request_id": f"req-{job_id}"},
        )
    finally:
        client.close()


def test_real_worker_turns_queued_tasks_into_stored_reports(
    e2e_broker_url: str,
    reports_stub: tuple[str, Recorded],
    worker_log: Path,
    tiny_bundle_dir: Path,
    ham_images: list[Path],
) -> None:
    recorded = reports_stub[1]
    ham_image = store_image(ham_images[0])
    _send(e2e_broker_url, "e2e-ham", ham_image)
    _send(e2e_broker_url, "e2e-grey", _flat_grey_image())

    _wait_until(lambda: len(recorded.puts()) >= 2, REPORT_TIMEOUT_S, "two report upserts", worker_log)

    reports = {path.rsplit("/", 1)[-1]: (headers, body) for _, path, headers, body in recorded.puts()}
    headers, ham = reports["e2e-ham"]
    assert headers["x-internal-token"] == TOKEN
    assert headers["x-tenant-id"] == "tenant-e2e"
    assert headers["x-request-id"] == "req-e2e-ham"
    assert ham["status"] == "done"
    assert ham["model"]["sha256"] == load_manifest(tiny_bundle_dir).onnx_sha256
    assert sum(ham["prediction"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert ham["ood"]["decision"] == "accepted"
    _, grey = reports["e2e-grey"]
    assert grey["status"] == "rejected"
    assert grey["prediction"] is None
    assert grey["ood"]["decision"] == "rejected_quality"
    assert "uniform" in grey["ood"]["reasons"]
    assert not [c for c in recorded.calls if c[1].endswith("/fail")]
    assert ham_image.data_b64[:64] not in worker_log.read_text(), "the image reached the worker's log"


def test_worker_with_a_missing_bundle_refuses_to_start(tmp_path: Path) -> None:
    env = os.environ | {
        "INFERENCE_BROKER_URL": "memory://",
        "INFERENCE_BUNDLE_DIR": str(tmp_path / "no-bundle"),
        "INFERENCE_INTERNAL_TOKEN": TOKEN,
    }
    command = [sys.executable, "-m", "celery", "-A", "services.inference.celery_app:celery_app", "worker"]

    finished = subprocess.run(
        [*command, "--pool", "solo", "-Q", "inference"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )

    assert finished.returncode != 0
    assert b"worker.bundle_invalid" in finished.stdout + finished.stderr
