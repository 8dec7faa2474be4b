"""Measure a bundle's OOD detector on held-out in-distribution images and real OOD images.

    python -m training.eval_ood --bundle models/skintriage-effnet-lite0/1.0.0

In-distribution: HAM10000 `test` (thresholds were fixed on `val` by `training.fit_ood`). OOD: each
`source` of shared/data/ood/manifest.csv, plus scikit-image's sample images as one more source.
For every single score, the fitted rule and the seed dual criterion: AUROC (ID test vs source),
the share of each source accepted at thresholds fixed on val at the detector's level (FPR), and the
share of ID test rejected. Writes `<bundle>/metrics_ood.json`, `plots/ood_roc.png` and the OOD section of
MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from model_bundle.predictor import Predictor
from training.config import DEFAULT_DATA_ROOT
from training.data import read_rgb
from training.fit_ood import cached_outputs, ham_split
from training.model_card import plot_ood_roc, write_ood_section
from training.ood import (
    SCORE_NAMES,
    OodStats,
    acceptance_for_rejection_budget,
    all_scores,
    auroc,
    fit_rule_thresholds,
    rank_score,
    rejects,
)

log = logging.getLogger("training.eval_ood")

# `cat` is `chelsea` under another name, so it is not listed twice.
SKIMAGE_SAMPLES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "brick",
    "grass",
    "gravel",
    "retina",
    "immunohistochemistry",
    "colorwheel",
    "coins",
    "moon",
    "page",
    "text",
    "horse",
    "hubble_deep_field",
    "logo",
    "motorcycle_left",
    "checkerboard",
    "clock",
    "cell",
    "microaneurysms",
)

Scores = dict[str, NDArray[np.float64]]


def skimage_images() -> list[NDArray[np.uint8]]:
    """scikit-image's bundled sample images as RGB uint8 (those that need a download are skipped)."""
    from skimage import data as skdata
    from skimage.util import img_as_ubyte

    images = []
    for name in dict.fromkeys(SKIMAGE_SAMPLES):
        try:
            img = np.asarray(getattr(skdata, name)())
        except Exception:  # absent in this version, or a sample fetched over the network
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.dtype != np.uint8:
            img = np.asarray(img_as_ubyte(img))  # type: ignore[no-untyped-call]  # skimage is untyped
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images.append(np.ascontiguousarray(img[..., :3]))
    return images


def ood_sources(ood_root: Path) -> dict[str, list[NDArray[np.uint8]]]:
    """Decoded images of every `source` in the OOD manifest."""
    by_source: dict[str, list[NDArray[np.uint8]]] = {}
    with (ood_root / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            by_source.setdefault(row["source"], []).append(read_rgb(ood_root / row["path"]))
    return by_source


def target_level(manifest: BundleManifest, n_val: int) -> float:
    """The val acceptance level the fitted detector was thresholded at (for a bundle without one,
    the level fit_ood would choose), so every single score is compared at the same level."""
    if manifest.ood_detector is not None:
        return manifest.ood_detector.target_acceptance
    return acceptance_for_rejection_budget(n_val)


def detectors(manifest: BundleManifest, val: Scores, level: float) -> dict[str, dict[str, float]]:
    """name -> OR-rule thresholds: each score alone (at val acceptance `level`), the fitted rule,
    the seed."""
    out = {name: fit_rule_thresholds(val, (name,), level)[0] for name in SCORE_NAMES if name in val}
    if manifest.ood_detector is not None:
        out["rule:" + "+".join(manifest.ood_detector.rule)] = dict(manifest.ood_detector.thresholds)
    # The seed rejects msp < msp_min, i.e. 1 - msp > 1 - msp_min in the OOD-high orientation.
    out["seed:msp+entropy"] = {"msp": 1.0 - manifest.ood.msp_min, "entropy": manifest.ood.entropy_max}
    return out


def measure(
    thresholds: Mapping[str, float], val: Scores, test: Scores, sources: Mapping[str, Scores]
) -> dict[str, object]:
    """AUROC and acceptance per OOD source (and their union) for one OR-rule."""
    names = list(thresholds)
    test_rank = rank_score(test, val, names)
    per_source: dict[str, dict[str, float | int]] = {}
    union_rank, union_accept = [], []
    for source, scores in sources.items():
        r = rank_score(scores, val, names)
        accepted = ~rejects(scores, thresholds)
        per_source[source] = {
            "n": len(r),
            "auroc": auroc(test_rank, r),
            "fpr": float(accepted.mean()),
        }
        union_rank.append(r)
        union_accept.append(accepted)
    per_source["all"] = {
        "n": int(sum(len(r) for r in union_rank)),
        "auroc": auroc(test_rank, np.concatenate(union_rank)),
        "fpr": float(np.concatenate(union_accept).mean()),
    }
    return {
        "scores": names,
        "thresholds": dict(thresholds),
        "val_acceptance": float(1.0 - rejects(val, thresholds).mean()),
        "test_acceptance": float(1.0 - rejects(test, thresholds).mean()),
        "test_rejection": float(rejects(test, thresholds).mean()),
        "sources": per_source,
    }


def evaluate_ood(
    bundle_dir: Path, data_root: Path, cache_dir: Path | None, limit_per_split: int = 0, skimage: bool = True
) -> tuple[dict[str, Any], dict[str, Scores], Scores, Scores]:
    """Every detector's metrics, plus the scores behind them (for the plot)."""
    predictor = Predictor(bundle_dir, intra_op_threads=2)
    manifest = predictor.manifest
    det = manifest.ood_detector
    stats = OodStats.load(bundle_dir / det.stats_file) if det else None
    k = det.knn_k if det else 1
    tag = f"lim{limit_per_split}"

    def scores_of(key: str, images: list[NDArray[np.uint8]]) -> Scores:
        out = cached_outputs(predictor, key, images, cache_dir)
        return all_scores(out["logits"], out["embedding"], manifest.temperature, stats, k)

    val = scores_of(f"val-{tag}", ham_split(data_root, "val", limit_per_split)[0])
    test = scores_of(f"test-{tag}", ham_split(data_root, "test", limit_per_split)[0])
    sources = {
        s: scores_of(f"ood-{s.replace('/', '_')}", imgs) for s, imgs in ood_sources(data_root / "ood").items()
    }
    if skimage:
        sources["skimage_samples"] = scores_of("ood-skimage", skimage_images())
    level = target_level(manifest, len(val["msp"]))
    results = {name: measure(th, val, test, sources) for name, th in detectors(manifest, val, level).items()}
    metrics: dict[str, Any] = {
        "bundle": f"{manifest.name}/{manifest.version}",
        "onnx_sha256": manifest.onnx_sha256,
        "target_acceptance": level,
        "n_val": len(val["msp"]),
        "n_test": len(test["msp"]),
        "sources": {s: len(v["msp"]) for s, v in sources.items()},
        "note": "fpr = share of an OOD source accepted at thresholds fixed on val for target_acceptance "
        "of val; auroc = ID test vs that source; thresholds never saw test or the OOD sets",
        "detectors": results,
    }
    return metrics, sources, val, test


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--data-root", type=Path, default=Path(DEFAULT_DATA_ROOT))
    parser.add_argument("--limit-per-split", type=int, default=0, help="0 = every image (tests use a few)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/ood-cache"), help="network outputs")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--no-skimage", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    manifest = load_manifest(args.bundle)
    metrics, sources, val, test = evaluate_ood(
        args.bundle,
        args.data_root,
        None if args.no_cache else args.cache_dir,
        args.limit_per_split,
        not args.no_skimage,
    )
    (args.bundle / "metrics_ood.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = args.bundle / "plots"
    plots.mkdir(exist_ok=True)
    detector_rules = {name: r["scores"] for name, r in metrics["detectors"].items()}
    plot_ood_roc(detector_rules, val, test, sources, plots / "ood_roc.png")
    write_ood_section(args.bundle / "MODEL_CARD.md", manifest, metrics)
    for name, r in metrics["detectors"].items():
        log.info(
            "%s: test rejection %.4f; %s",
            name,
            r["test_rejection"],
            {s: (round(v["auroc"], 4), round(v["fpr"], 4)) for s, v in r["sources"].items()},
        )


if __name__ == "__main__":
    main()
