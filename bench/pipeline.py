"""Benchmark the bare pipeline (decode, preprocess, ONNX Runtime, post-process) of one bundle on
real HAM10000 images, at several batch sizes; writes bench/results/pipeline-<time>.json.

With `--baseline BUNDLE` a second bundle is measured in the same run, the two alternating over
`--rounds` rounds so that machine drift hits both alike, and the JSON records the per-image cost
ratio (the served model against the baseline, at each batch size)."""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import PIL
from PIL import Image

from model_bundle.predictor import ClinicalContext, Predictor, RawOutput

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO_ROOT / "models" / "skintriage-effnet-lite0" / "2.0.1"
DEFAULT_DATA_ROOT = Path(os.environ.get("SKINTRIAGE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
STAGES = ("decode", "preprocess", "onnxruntime", "postprocess")
CONTEXT = ClinicalContext(age=55, sex="female", body_site="back")


@dataclass
class Timings:
    """Seconds per batch: end to end and per stage."""

    total: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})


def load_images(data_root: Path, count: int) -> list[bytes]:
    """The first `count` HAM10000 JPEGs (sorted by name), as encoded bytes in memory."""
    paths = sorted((data_root / "ham10000" / "images").glob("*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"no HAM10000 images under {data_root}; set SKINTRIAGE_DATA_ROOT or --data-root")
    return [p.read_bytes() for p in paths]


def run_batch(predictor: Predictor, encoded: list[bytes], timings: Timings | None) -> None:
    """One batch through every stage, timed when `timings` is given."""
    outputs = [
        predictor.manifest.io.logits,
        predictor.manifest.io.embedding,
        predictor.manifest.io.feature_map,
    ]
    t0 = time.perf_counter()
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in encoded]
    t1 = time.perf_counter()
    # A bundle that fuses clinical metadata encodes it here too (what a request carrying it costs).
    feeds = predictor.feeds(images, [CONTEXT] * len(images))
    t2 = time.perf_counter()
    logits, embedding, fmap = predictor.session.run(outputs, feeds)
    t3 = time.perf_counter()
    for i in range(len(encoded)):
        predictor.postprocess(RawOutput(logits[i], embedding[i], fmap[i]))
    t4 = time.perf_counter()
    if timings is not None:
        timings.total.append(t4 - t0)
        for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            timings.stages[stage].append(seconds)


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 and mean of a list of seconds, in milliseconds."""
    arr = np.asarray(samples) * 1000.0
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "mean": round(float(arr.mean()), 3),
    }


def bench_batch_size(
    predictor: Predictor, images: list[bytes], batch_size: int, warmup: int
) -> dict[str, Any]:
    """Every image once, in batches of `batch_size` (a short last batch is dropped), after warm-up."""
    batches = [images[i : i + batch_size] for i in range(0, len(images) - batch_size + 1, batch_size)]
    if not batches:
        raise SystemExit(f"--images must be at least the batch size {batch_size}")
    for batch in batches[:warmup]:
        run_batch(predictor, batch, None)
    timings = Timings()
    start = time.perf_counter()
    for batch in batches:
        run_batch(predictor, batch, timings)
    elapsed = time.perf_counter() - start
    n_images = len(batches) * batch_size
    return {
        "batch_size": batch_size,
        "batches": len(batches),
        "images": n_images,
        "images_per_s": round(n_images / elapsed, 2),
        "batch_latency_ms": percentiles_ms(timings.total),
        "stage_latency_ms": {stage: percentiles_ms(timings.stages[stage]) for stage in STAGES},
    }


def best_round(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per batch size, the round with the highest throughput (the least disturbed by the rest of
    the machine), so a background burst in one round does not decide a ratio."""
    return [max(per_size, key=lambda r: float(r["images_per_s"])) for per_size in zip(*rounds, strict=True)]


def git_commit() -> dict[str, Any]:
    """HEAD and whether the tree had uncommitted changes."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def write_record(benchmark: str, fields: dict[str, Any], out: Path | None) -> Path:
    """Write a run's JSON (`benchmark`, when, the commit, the machine, then `fields`) to `out`,
    by default bench/results/<benchmark>-<UTC time>.json; returns the path."""
    now = datetime.now(UTC)
    record = {
        "benchmark": benchmark,
        "created_at": now.isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine_info(),
        **fields,
    }
    path = out or REPO_ROOT / "bench" / "results" / f"{benchmark}-{now:%Y%m%dT%H%M%SZ}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in cpuinfo.read_text().splitlines()
                if ln.startswith("model name")
            ),
            cpu,
        )
    memory_gib = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": memory_gib,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
        "python": sys.version.split()[0],
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def main(argv: list[str] | None = None) -> Path:
    """Run the benchmark and write its JSON; returns the file written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--images", type=int, default=256, help="distinct images per batch size")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--out", type=Path, help="default: bench/results/pipeline-<UTC time>.json")
    parser.add_argument("--baseline", type=Path, help="a second bundle measured in the same run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds when --baseline is given")
    args = parser.parse_args(argv)

    predictor = Predictor(args.bundle, intra_op_threads=args.threads)
    baseline = Predictor(args.baseline, intra_op_threads=args.threads) if args.baseline else None
    images = load_images(args.data_root, args.images)
    machine = machine_info()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rounds: dict[str, list[list[dict[str, Any]]]] = {"bundle": [], "baseline": []}
    for _ in range(args.rounds if baseline else 1):
        rounds["bundle"].append([bench_batch_size(predictor, images, b, args.warmup) for b in sizes])
        if baseline is not None:
            rounds["baseline"].append([bench_batch_size(baseline, images, b, args.warmup) for b in sizes])
    results = best_round(rounds["bundle"])
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "benchmark": "pipeline",
        "created_at": now.isoformat(timespec="seconds"),
        "git": git_commit(),
        "machine": machine,
        "bundle": {**predictor.model_ref.model_dump(), "dir": str(args.bundle)},
        "settings": {
            "images": len(images),
            "threads": args.threads,
            "warmup_batches": args.warmup,
            "rounds": len(rounds["bundle"]),
        },
        "stages": list(STAGES),
        "results": results,
    }
    if baseline is not None:
        base_results = best_round(rounds["baseline"])
        record["baseline"] = {
            "bundle": {**baseline.model_ref.model_dump(), "dir": str(args.baseline)},
            "results": base_results,
        }
        record["cost_ratio"] = {
            str(r["batch_size"]): round(b["images_per_s"] / r["images_per_s"], 3)
            for r, b in zip(results, base_results, strict=True)
        }
    out = args.out or REPO_ROOT / "bench" / "results" / f"pipeline-{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    for r in results:
        lat = r["batch_latency_ms"]
        print(
            f"batch {r['batch_size']:>3}: {r['images_per_s']:>8.1f} images/s  "
            f"latency p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  p99 {lat['p99']:.1f} ms"
        )
    if "cost_ratio" in record:
        print(f"per-image cost vs {args.baseline}: {record['cost_ratio']}")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
