"""bench/fleet.py starts its own fleet (embedded shape, tiny bundle here), measures single-image
and batch submissions over HTTP, stops the fleet and writes the JSON it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.fleet import main
from tests.conftest import DATA_ROOT

pytestmark = pytest.mark.e2e


def test_fleet_benchmark_writes_throughput_and_latency_for_singles_and_batches(
    tiny_bundle_dir: Path, ham_images: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "fleet.json"
    argv = ["--embedded", "--bundle", str(tiny_bundle_dir), "--data-root", str(DATA_ROOT)]
    argv += ["--images", "4", "--warmup", "1", "--requests", "2", "--concurrency", "1,2"]
    argv += ["--batch-sizes", "1,2", "--batches", "1", "--out", str(out)]

    assert main(argv) == out

    record = json.loads(out.read_text())
    assert record["benchmark"] == "fleet"
    assert record["backends"] == {"shape": "embedded", "database": "sqlite", "broker": "sqla+sqlite"}
    assert record["git"]["commit"] and record["machine"]["cpu_count"] >= 1
    assert record["machine"]["onnxruntime"] and record["machine"]["python"]
    assert record["bundle"]["sha256"] and record["bundle"]["name"] == "tiny-test"
    singles = [r for r in record["results"] if r["mode"] == "single"]
    batches = [r for r in record["results"] if r["mode"] == "batch"]
    assert [r["concurrency"] for r in singles] == [1, 2]
    assert [r["batch_size"] for r in batches] == [1, 2]
    for result in singles:
        assert result["images"] == 2 and result["errors"] == {} and result["images_per_s"] > 0
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p95"] <= result["latency_ms"]["p99"]
    for result in batches:
        assert result["images"] == result["batch_size"] and result["errors"] == {}
        assert sum(result["statuses"].values()) == result["batch_size"]
        assert result["batch_latency_ms"]["p50"] > 0
