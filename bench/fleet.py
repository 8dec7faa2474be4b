"""Benchmark the whole fleet over HTTP (gateway -> reports -> broker -> worker -> ood -> reports) on
real HAM10000 images: single-image submissions with `Prefer: wait` at several client
concurrencies, and batches of several sizes; writes bench/results/fleet-<time>.json.

The fleet is started here, as separate processes on loopback ports, exactly as the end-to-end
tests start it (bench/fleet_runner.py): PostgreSQL (a fresh database, dropped afterwards) and
Redis (a flushed database) by default, or with --embedded the SQLite + SQLite-broker default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from bench.fleet_runner import (
    Backends,
    Fleet,
    FleetError,
    embedded_backends,
    flushed_redis_database,
    fresh_postgres_database,
)
from bench.pipeline import (
    DEFAULT_BUNDLE,
    DEFAULT_DATA_ROOT,
    REPO_ROOT,
    git_commit,
    load_images,
    machine_info,
    percentiles_ms,
)
from bench.process_meter import ProcessMeter
from model_bundle.loader import load_manifest
from scripts.run_fleet import usable_cores
from services.gateway.config import Settings

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
BENCH_REDIS_DB = 12  # a database of its own, flushed before and after
TENANT = "bench"
FINISHED = frozenset({"done", "rejected", "failed"})
POLL_INTERVAL_S = 0.05  # how often the benchmark itself polls (batches, and jobs past their wait)
FINISH_TIMEOUT_S = 300.0


@dataclass
class Outcomes:
    """What a run of requests or batches ended as."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wait_expired: int = 0  # answered 202 (not finished within `Prefer: wait`), then polled


class Bench:
    """An HTTP client of the fleet's gateway, authenticated as one tenant."""

    def __init__(self, client: httpx.AsyncClient, api_key: str, images: list[bytes], wait_s: int) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {api_key}"}
        self.images = images
        self.wait_s = wait_s
        self.next_image = 0

    def image(self) -> bytes:
        """The images in turn, round and round."""
        data = self.images[self.next_image % len(self.images)]
        self.next_image += 1
        return data

    async def single(self, outcomes: Outcomes | None) -> None:
        """One `POST /v1/images` with `Prefer: wait`; timed until the job has finished."""
        files = {"file": ("lesion.jpg", self.image(), "image/jpeg")}
        headers = self.auth | {"Prefer": f"wait={self.wait_s}"}
        start = time.perf_counter()
        record = outcomes or Outcomes()  # warm-up requests are recorded nowhere
        try:
            response = await self.client.post("/v1/images", files=files, headers=headers)
            if response.status_code not in (200, 202):
                record.errors[error_code(response)] += 1
                return
            job = response.json()
            if response.status_code == 202:
                record.wait_expired += 1
                job = await self._poll(f"/v1/jobs/{job['job_id']}")
        except (httpx.HTTPError, TimeoutError) as exc:
            record.errors[type(exc).__name__] += 1
            return
        record.latencies.append(time.perf_counter() - start)
        record.statuses[job["status"]] += 1

    async def batch(self, size: int, outcomes: Outcomes) -> None:
        """One `POST /v1/batches` of `size` images; timed until its last job has finished."""
        files = [("files", (f"lesion-{i}.jpg", self.image(), "image/jpeg")) for i in range(size)]
        start = time.perf_counter()
        try:
            response = await self.client.post("/v1/batches", files=files, headers=self.auth)
            if response.status_code != 202:
                outcomes.errors[error_code(response)] += 1
                return
            batch = await self._poll(f"/v1/batches/{response.json()['batch_id']}")
        except (httpx.HTTPError, TimeoutError) as exc:
            outcomes.errors[type(exc).__name__] += 1
            return
        outcomes.latencies.append(time.perf_counter() - start)
        outcomes.statuses.update({s: n for s, n in batch["counts"].items() if s in FINISHED and n})
        if rejected := response.json()["rejected"]:
            outcomes.errors["batch.item_rejected"] += len(rejected)

    async def _poll(self, path: str) -> dict[str, Any]:
        """GET a job or batch until it has finished."""
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while time.monotonic() < deadline:
            response = await self.client.get(path, headers=self.auth)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            counts = body.get("counts")
            if (counts and sum(counts[s] for s in FINISHED) == counts["total"]) or body.get(
                "status"
            ) in FINISHED:
                return body
            await asyncio.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"{path} not finished after {FINISH_TIMEOUT_S:.0f} s")


def error_code(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"http.{response.status_code}"


def _summary(outcomes: Outcomes, images: int, elapsed: float) -> dict[str, Any]:
    return {
        "images": images,
        "elapsed_s": round(elapsed, 3),
        "images_per_s": round(images / elapsed, 2) if elapsed > 0 else None,
        "statuses": dict(sorted(outcomes.statuses.items())),
        "errors": dict(sorted(outcomes.errors.items())),
    }


class SingleSender(Protocol):
    """Sends one image and waits for its result (the fleet's gateway, or the baseline service)."""

    async def single(self, outcomes: Outcomes | None) -> None: ...


async def bench_single(bench: SingleSender, concurrency: int, requests: int) -> dict[str, Any]:
    """`requests` submissions, at most `concurrency` in flight at once."""
    outcomes = Outcomes()
    remaining = iter(range(requests))

    async def client_loop() -> None:
        for _ in remaining:  # a shared iterator: each request is taken by exactly one loop
            await bench.single(outcomes)

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    finished = len(outcomes.latencies)
    return {
        "mode": "single",
        "concurrency": concurrency,
        "requests": requests,
        **_summary(outcomes, finished, elapsed),
        "wait_expired": outcomes.wait_expired,
        "latency_ms": percentiles_ms(outcomes.latencies) if outcomes.latencies else None,
    }


async def bench_batches(bench: Bench, size: int, batches: int) -> dict[str, Any]:
    """`batches` batches of `size` images, one after another."""
    outcomes = Outcomes()
    start = time.perf_counter()
    for _ in range(batches):
        await bench.batch(size, outcomes)
    elapsed = time.perf_counter() - start
    return {
        "mode": "batch",
        "batch_size": size,
        "batches": batches,
        **_summary(outcomes, len(outcomes.latencies) * size, elapsed),
        "batch_latency_ms": percentiles_ms(outcomes.latencies) if outcomes.latencies else None,
    }


def fleet_meter(fleet: Fleet) -> ProcessMeter:
    """Every fleet process, this benchmark client, and PostgreSQL and Redis when the fleet uses them."""
    pids = {child.spec.name: child.process.pid for child in fleet.children}
    # The fleet's processes are this process's children: the client is counted alone.
    return ProcessMeter.for_pids(
        pids, servers=fleet.backends.name == "postgres-redis", alone={"bench_client": os.getpid()}
    )


async def metered(meter: ProcessMeter, run: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """The run's result plus what it cost each process (CPU ms per finished image, RSS)."""
    before = meter.sample()
    result = await run
    result["cost"] = meter.cost(before, meter.sample(), result["images"])
    return result


async def run_benchmarks(fleet: Fleet, images: list[bytes], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Warm up, then every concurrency level and every batch size in turn, each metered."""
    meter = fleet_meter(fleet)
    limits = httpx.Limits(max_connections=max(args.concurrency) + 2)
    timeout = httpx.Timeout(args.wait + 60.0)
    async with httpx.AsyncClient(
        base_url=fleet.gateway_url, limits=limits, timeout=timeout, trust_env=False
    ) as client:
        bench = Bench(client, fleet.api_keys[TENANT], images, args.wait)
        for _ in range(args.warmup):
            await bench.single(None)
        results = []
        for concurrency in args.concurrency:
            results.append(await metered(meter, bench_single(bench, concurrency, args.requests)))
            _print(results[-1])
        for size in args.batch_sizes:
            results.append(await metered(meter, bench_batches(bench, size, args.batches)))
            _print(results[-1])
    return results


def _print(result: dict[str, Any]) -> None:
    if result["mode"] == "single":
        label, latency = f"single, concurrency {result['concurrency']:>2}", result["latency_ms"]
    else:
        label, latency = f"batch of {result['batch_size']:>3}      ", result["batch_latency_ms"]
    timing = (
        f"p50 {latency['p50']:.0f} ms  p95 {latency['p95']:.0f} ms  p99 {latency['p99']:.0f} ms"
        if latency
        else "no finished request"
    )
    errors = f"  errors {result['errors']}" if result["errors"] else ""
    print(f"{label}: {result['images_per_s'] or 0:>7.2f} images/s  {timing}{errors}", flush=True)
    if cost := result.get("cost"):
        parts = "  ".join(f"{name} {ms}" for name, ms in cost["cpu_ms_per_image"].items())
        print(f"    CPU ms per image: {parts}  (total {cost['cpu_ms_per_image_total']})", flush=True)


@contextmanager
def chosen_backends(args: argparse.Namespace, workdir: Path) -> Iterator[Backends]:
    """SQLite files under `workdir`, or a fresh PostgreSQL database and a flushed Redis database."""
    if args.embedded:
        yield embedded_backends(workdir / "var")
        return
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database(args.postgres_url, "skintriage_bench"))
        broker_url = stack.enter_context(flushed_redis_database(args.redis_url, args.redis_db))
        yield Backends("postgres-redis", database_url, broker_url)


def _int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument(
        "--embedded", action="store_true", help="SQLite + SQLite broker, not PostgreSQL + Redis"
    )
    parser.add_argument(
        "--postgres-url", default=DEFAULT_POSTGRES_URL, help="an existing database to connect to"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--redis-db", type=int, default=BENCH_REDIS_DB, help="flushed before and after")
    parser.add_argument("--concurrency", type=_int_list, default=[1, 4, 8], help="clients in flight")
    parser.add_argument("--requests", type=int, default=64, help="single-image requests per concurrency")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 32])
    parser.add_argument("--batches", type=int, default=4, help="batches per batch size, one at a time")
    parser.add_argument("--images", type=int, default=64, help="distinct HAM10000 images, reused in turn")
    parser.add_argument("--warmup", type=int, default=4, help="untimed single requests first")
    parser.add_argument("--wait", type=int, default=30, help="seconds of `Prefer: wait`")
    parser.add_argument(
        "--worker-concurrency", type=int, default=None, help="worker processes (default: as `make run`)"
    )
    parser.add_argument("--ort-threads", type=int, default=1, help="INFERENCE_ORT_THREADS")
    parser.add_argument(
        "--task-chunk-size", type=int, default=None, help="GATEWAY_TASK_CHUNK_SIZE (default: the gateway's)"
    )
    parser.add_argument(
        "--group-linger-ms", type=float, default=None, help="GATEWAY_GROUP_LINGER_MS (default: the gateway's)"
    )
    parser.add_argument("--out", type=Path, help="default: bench/results/fleet-<UTC time>.json")
    return parser.parse_args(argv)


def gateway_env(args: argparse.Namespace) -> dict[str, str]:
    """The gateway settings the command line overrides."""
    env = {}
    if args.task_chunk_size:
        env["GATEWAY_TASK_CHUNK_SIZE"] = str(args.task_chunk_size)
    if args.group_linger_ms is not None:
        env["GATEWAY_GROUP_LINGER_MS"] = str(args.group_linger_ms)
    return env


def main(argv: list[str] | None = None) -> Path:
    """Start the fleet, run the benchmark, stop the fleet, write the JSON; returns its path."""
    args = parse_args(argv)
    manifest = load_manifest(args.bundle)  # fail before starting anything
    images = load_images(args.data_root, args.images)
    machine = machine_info()
    workdir = Path(tempfile.mkdtemp(prefix="skintriage-bench-fleet-"))
    started = time.perf_counter()
    try:
        with (
            chosen_backends(args, workdir) as backends,
            Fleet(
                backends,
                args.bundle.resolve(),
                workdir,
                tenants=(TENANT,),
                worker_concurrency=args.worker_concurrency,
                ort_threads=args.ort_threads,
                extra_env=gateway_env(args),
            ) as fleet,
        ):
            print(f"fleet ready in {time.perf_counter() - started:.1f} s ({backends.name})", flush=True)
            try:
                results = asyncio.run(run_benchmarks(fleet, images, args))
                fleet.check_alive()
            except Exception:
                print(fleet.logs(), file=sys.stderr)
                raise
    except FleetError as exc:
        raise SystemExit(f"the fleet failed: {exc}\n(logs kept in {workdir})") from None
    shutil.rmtree(workdir, ignore_errors=True)

    now = datetime.now(UTC)
    record = {
        "benchmark": "fleet",
        "created_at": now.isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine,
        "bundle": {
            "name": manifest.name,
            "version": manifest.version,
            "sha256": manifest.onnx_sha256,
            "dir": str(args.bundle),
        },
        "backends": {
            "shape": backends.name,
            "database": backends.database_url.split(":", 1)[0],
            "broker": backends.broker_url.split(":", 1)[0],
        },
        "settings": {
            "images": len(images),
            "requests_per_concurrency": args.requests,
            "batches_per_size": args.batches,
            "warmup_requests": args.warmup,
            "prefer_wait_s": args.wait,
            "poll_interval_s": POLL_INTERVAL_S,
            "worker_concurrency": args.worker_concurrency or usable_cores(),
            "ort_threads": args.ort_threads,
            "task_chunk_size": args.task_chunk_size or Settings.model_fields["task_chunk_size"].default,
            "group_linger_ms": (
                args.group_linger_ms
                if args.group_linger_ms is not None
                else Settings.model_fields["group_linger_ms"].default
            ),
        },
        "results": results,
    }
    out = args.out or REPO_ROOT / "bench" / "results" / f"fleet-{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    if failed := [r for r in results if r["errors"]]:
        raise SystemExit(f"{len(failed)} run(s) had errors; see `errors` in {out}")
    return out


if __name__ == "__main__":
    main()
