"""Start the baseline service (bench/baseline/service.py) as its own process and measure it the way
bench.fleet measures the fleet: `concurrency` clients, each sending one image and waiting for its
answer, with CPU and resident memory of the process recorded per run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx

from bench.fleet import Outcomes, bench_single, error_code
from bench.fleet_runner import free_base_port
from bench.process_meter import ProcessMeter
from scripts.run_fleet import REPO_ROOT, http_ok

READY_TIMEOUT_S = 120.0  # importing torch and building the model


class BaselineClient:
    """Sends one image per request to `POST /predict`; an answer is a finished image."""

    def __init__(self, client: httpx.AsyncClient, images: list[bytes]) -> None:
        self.client = client
        self.images = images
        self.next_image = 0

    async def single(self, outcomes: Outcomes | None) -> None:
        """One request, timed until its answer."""
        data = self.images[self.next_image % len(self.images)]
        self.next_image += 1
        record = outcomes or Outcomes()
        start = time.perf_counter()
        try:
            response = await self.client.post("/predict", files={"file": ("lesion.jpg", data, "image/jpeg")})
        except httpx.HTTPError as exc:
            record.errors[type(exc).__name__] += 1
            return
        if response.status_code != 200:
            record.errors[error_code(response)] += 1
            return
        record.latencies.append(time.perf_counter() - start)
        record.statuses["done"] += 1


@contextmanager
def baseline_server(threads: int | None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The service on a free loopback port; yields (base URL, process) and always stops it."""
    port = free_base_port()
    env = dict(os.environ)
    if threads:
        env["BASELINE_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "uvicorn", "bench.baseline.service:app", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not http_ok(f"{url}/healthz"):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the baseline did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.25)
            yield url, process
        finally:
            process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            if process.poll() is None:
                process.kill()
                process.wait()


async def drive(
    url: str, meter: ProcessMeter, images: list[bytes], concurrency: list[int], requests: int, warmup: int
) -> list[dict[str, Any]]:
    """Warm up, then each concurrency level in turn, metered."""
    limits = httpx.Limits(max_connections=max(concurrency) + 2)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0, trust_env=False) as client:
        sender = BaselineClient(client, images)
        for _ in range(warmup):
            await sender.single(None)
        results = []
        for level in concurrency:
            before = meter.sample()
            result = await bench_single(sender, level, requests)
            result["cost"] = meter.cost(before, meter.sample(), result["images"])
            results.append(result)
            print(f"baseline, concurrency {level:>2}: {result['images_per_s']} images/s", flush=True)
    return results


def measure_baseline(
    images: list[bytes], concurrency: list[int], requests: int, warmup: int, threads: int | None
) -> dict[str, Any]:
    """Start the baseline, measure it, stop it; the `results` of one benchmark record."""
    with baseline_server(threads) as (url, process):
        meter = ProcessMeter.for_pids({"baseline": process.pid}, servers=False, alone={})
        results = asyncio.run(drive(url, meter, images, concurrency, requests, warmup))
    return {
        "service": "bench/baseline/service.py (FastAPI, PyTorch eager EfficientNet-Lite0, 224 px, batch 1)",
        "threads": threads or len(os.sched_getaffinity(0)),
        "results": results,
    }


def main() -> None:
    """Measure the baseline alone (bench.suite measures it together with everything else)."""
    from bench.pipeline import DEFAULT_DATA_ROOT, load_images

    record = measure_baseline(load_images(DEFAULT_DATA_ROOT, 64), [1, 8, 32], 64, 4, None)
    print(record)


if __name__ == "__main__":
    main()
