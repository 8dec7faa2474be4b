"""The pipeline benchmark runs end to end on a real (tiny) bundle and real images, and writes the
JSON it promises."""

from __future__ import annotations

import json
from pathlib import Path

from bench.pipeline import STAGES, main
from tests.conftest import DATA_ROOT


def test_pipeline_benchmark_writes_latency_percentiles_per_batch_size(
    tiny_bundle_dir: Path, ham_images: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "result.json"
    argv = ["--bundle", str(tiny_bundle_dir), "--data-root", str(DATA_ROOT), "--images", "8"]
    main([*argv, "--batch-sizes", "1,4", "--warmup", "1", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["bundle"]["sha256"] and record["git"]["commit"]
    assert record["machine"]["cpu_count"] >= 1
    assert [r["batch_size"] for r in record["results"]] == [1, 4]
    for result in record["results"]:
        assert result["images"] == 8 and result["images_per_s"] > 0
        latency = result["batch_latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
        assert set(result["stage_latency_ms"]) == set(STAGES)
