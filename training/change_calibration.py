"""`make calibrate-change`: when is a lesion "changed"? Thresholds for the lesion comparison
(services/reports/domain/lesion_change.py), calibrated on HAM10000 lesions imaged more than once.

Two images of the same lesion (HAM10000's `lesion_id`) are the noise floor: what re-imaging alone
changes (angle, zoom, lighting, a few weeks of follow-up). Two images of different lesions are the
separation a real change should approach. For every pair, three measures:
- |delta P(malignant)| (the bundle's calibrated probability, with the image's clinical metadata);
- the cosine distance between the pooled embeddings (float16, as the worker sends them);
- |relative change| of the segmented lesion's area (model_bundle.segmentation), the later image
  taken as the one with the larger image id.
Each threshold is the `QUANTILE` quantile of same-lesion pairs of train+val (5% of unchanged
lesions are flagged); the AUROC of each measure (same vs different lesion) is reported on the
test pairs, which take no part in fitting, together with the segmentation's Dice on `test`.

Writes `change_calibration.json` (contracts.lesions.ChangeCalibration) into the bundle and its
"Lesion change" section into MODEL_CARD.md; the bundle's manifest and hashes are untouched.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from contracts.lesions import ChangeCalibration, MeasureCalibration, SegmentationScore
from model_bundle.predictor import ClinicalContext, Predictor
from model_bundle.segmentation import dice, resize_mask, segment_lesion
from training.config import DEFAULT_DATA_ROOT
from training.model_card import write_lesion_change_section
from training.ood import auroc as ood_auroc

log = logging.getLogger("training.change_calibration")

CALIBRATION_FILE = "change_calibration.json"
# 5% of same-lesion pairs above each threshold: the false "changed" rate clinicians accept.
QUANTILE = 0.95
# Different-lesion pairs drawn per same-lesion pair (random pairs of images of different lesions).
DIFFERENT_PER_SAME = 4
SEED = 12
FIT_SPLITS = ("train", "val")
MEASURES = ("malignant_probability_delta", "embedding_distance", "area_relative_change")


@dataclass(frozen=True)
class ImageRow:
    """One HAM10000 image of the calibration set."""

    image_id: str
    lesion_id: str
    split: str
    context: ClinicalContext


def read_rows(data_root: Path) -> list[ImageRow]:
    """Every image of metadata.csv, with the clinical fields the model may fuse."""
    rows: list[ImageRow] = []
    with (data_root / "metadata.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            age = float(row["age"]) if row["age"] else None
            sex = row["sex"] if row["sex"] not in ("", "unknown") else None
            site = row["localization"] if row["localization"] not in ("", "unknown") else None
            rows.append(
                ImageRow(row["image_id"], row["lesion_id"], row["split"], ClinicalContext(age, sex, site))
            )
    return rows


def lesion_groups(lesion_ids: Sequence[str]) -> dict[str, list[int]]:
    """Indices of each lesion's images, for lesions with at least two."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, lesion_id in enumerate(lesion_ids):
        groups[lesion_id].append(index)
    return {lesion: indices for lesion, indices in groups.items() if len(indices) >= 2}


def same_lesion_pairs(groups: dict[str, list[int]]) -> list[tuple[int, int]]:
    """Every pair of two images of one lesion (i < j)."""
    return [
        (first, second)
        for indices in groups.values()
        for position, first in enumerate(indices)
        for second in indices[position + 1 :]
    ]


def different_lesion_pairs(
    lesion_ids: Sequence[str], candidates: Sequence[int], count: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """`count` distinct random pairs (i < j) of `candidates` whose images show different lesions."""
    pool = np.asarray(candidates)
    possible = len(pool) * (len(pool) - 1) // 2
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < count and len(pairs) < possible:
        first, second = (int(v) for v in rng.choice(pool, size=2, replace=False))
        if lesion_ids[first] != lesion_ids[second]:
            pairs.add((min(first, second), max(first, second)))
    return sorted(pairs)


def cosine_distances(
    embeddings: NDArray[np.float32], pairs: Sequence[tuple[int, int]]
) -> NDArray[np.float64]:
    """1 - cos between the embeddings of each pair."""
    first = embeddings[[i for i, _ in pairs]].astype(np.float64)
    second = embeddings[[j for _, j in pairs]].astype(np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    distances: NDArray[np.float64] = 1.0 - np.sum(first * second, axis=1) / np.maximum(norms, 1e-12)
    return distances


def pair_measures(
    probability: NDArray[np.float64],
    embeddings: NDArray[np.float32],
    area: NDArray[np.float64],
    pairs: Sequence[tuple[int, int]],
) -> dict[str, NDArray[np.float64]]:
    """The three change measures of each pair (NaN where the earlier area is 0)."""
    first = np.asarray([i for i, _ in pairs])
    second = np.asarray([j for _, j in pairs])
    before, after = area[first], area[second]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(before > 0, np.abs(after - before) / np.where(before > 0, before, 1.0), np.nan)
    return {
        "malignant_probability_delta": np.abs(probability[second] - probability[first]),
        "embedding_distance": cosine_distances(embeddings, pairs),
        "area_relative_change": relative,
    }


def auroc(positives: NDArray[np.float64], negatives: NDArray[np.float64]) -> float | None:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney, as the OOD
    evaluation measures it); NaNs (a pair missing a measure) dropped, None when a side is empty."""
    pos = positives[np.isfinite(positives)]
    neg = negatives[np.isfinite(negatives)]
    if pos.size == 0 or neg.size == 0:
        return None
    return ood_auroc(neg, pos)


def fit_threshold(same_lesion: NDArray[np.float64], quantile: float = QUANTILE) -> float:
    """The `quantile` of the same-lesion values (NaNs dropped)."""
    values = same_lesion[np.isfinite(same_lesion)]
    return float(np.quantile(values, quantile)) if values.size else float("inf")


def measure_calibration(
    fit_same: NDArray[np.float64], test_same: NDArray[np.float64], test_different: NDArray[np.float64]
) -> MeasureCalibration:
    """One measure's threshold (fitted) and its test-pair figures."""
    threshold = fit_threshold(fit_same)

    def above(values: NDArray[np.float64]) -> float | None:
        finite = values[np.isfinite(values)]
        return float(np.mean(finite > threshold)) if finite.size else None

    def median(values: NDArray[np.float64]) -> float | None:
        finite = values[np.isfinite(values)]
        return float(np.median(finite)) if finite.size else None

    return MeasureCalibration(
        threshold=threshold,
        same_lesion_quantile=QUANTILE,
        auroc_test=auroc(test_different, test_same),
        same_lesion_median_test=median(test_same),
        different_lesion_median_test=median(test_different),
        false_change_rate_test=above(test_same),
        detection_rate_test=above(test_different),
    )


def _load(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def run_model(
    predictor: Predictor, data_root: Path, rows: Sequence[ImageRow], batch_size: int = 32
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """P(malignant) and the float16-rounded embedding (what the worker stores) of each image."""
    probabilities: list[float] = []
    embeddings: list[NDArray[np.float32]] = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        images = [_load(data_root / "images" / f"{row.image_id}.jpg") for row in batch]
        for raw in predictor.run(images, [row.context for row in batch]):
            probabilities.append(predictor.postprocess(raw).malignant_probability)
            embeddings.append(raw.embedding.astype(np.float16).astype(np.float32))
        if start // batch_size % 20 == 0:
            log.info("model: %d / %d images", start + len(batch), len(rows))
    return np.asarray(probabilities, dtype=np.float64), np.stack(embeddings)


def segment(
    data_root: Path, rows: Sequence[ImageRow], with_dice: bool
) -> tuple[NDArray[np.float64], list[float]]:
    """The segmented area fraction of each image and, with_dice, its Dice against the dataset's mask."""
    areas: list[float] = []
    scores: list[float] = []
    for index, row in enumerate(rows):
        image = _load(data_root / "images" / f"{row.image_id}.jpg")
        result = segment_lesion(image)
        areas.append(result.area_fraction)
        if with_dice:
            with Image.open(data_root / "masks" / f"{row.image_id}.png") as mask_image:
                truth = np.asarray(mask_image.convert("L")) > 127
            scores.append(dice(resize_mask(result.mask, image.size), truth))
        if index % 500 == 0:
            log.info("segmentation: %d / %d images", index + 1, len(rows))
    return np.asarray(areas, dtype=np.float64), scores


def calibrate(bundle: Path, data_root: Path, threads: int = 1, max_lesions: int = 0) -> ChangeCalibration:
    """Run the bundle and the segmentation on HAM10000, fit the thresholds, measure them on test.
    `max_lesions` > 0 keeps that many lesions per split group (and test images for the Dice): a
    smoke run, never a calibration to ship."""
    rows = read_rows(data_root)
    predictor = Predictor(bundle, intra_op_threads=threads)
    by_group = {
        "fit": [r for r in rows if r.split in FIT_SPLITS],
        "test": [r for r in rows if r.split == "test"],
    }
    rng = np.random.default_rng(SEED)
    measures: dict[str, dict[str, dict[str, NDArray[np.float64]]]] = {}
    pair_counts: dict[str, dict[str, int]] = {}
    dice_scores: list[float] = []
    for group, group_rows in by_group.items():
        groups = lesion_groups([r.lesion_id for r in group_rows])
        if max_lesions > 0:
            groups = dict(list(groups.items())[:max_lesions])
        used = sorted({index for indices in groups.values() for index in indices})
        # The pairs' images first (model and segmentation), then test's Dice over every test image.
        chosen = [group_rows[i] for i in used]
        log.info("%s: %d lesions with >= 2 images, %d images", group, len(groups), len(chosen))
        probability, embeddings = run_model(predictor, data_root, chosen)
        area, _ = segment(data_root, chosen, with_dice=False)
        local = {index: position for position, index in enumerate(used)}
        lesion_ids = [r.lesion_id for r in chosen]
        same = [(local[i], local[j]) for i, j in same_lesion_pairs(groups)]
        different = different_lesion_pairs(
            lesion_ids, range(len(chosen)), DIFFERENT_PER_SAME * len(same), rng
        )
        measures[group] = {
            "same": pair_measures(probability, embeddings, area, same),
            "different": pair_measures(probability, embeddings, area, different),
        }
        pair_counts[group] = {
            "lesions": len(groups),
            "images": len(chosen),
            "same_lesion": len(same),
            "different_lesion": len(different),
        }
    dice_rows = by_group["test"][: 4 * max_lesions] if max_lesions > 0 else by_group["test"]
    _, dice_scores = segment(data_root, dice_rows, with_dice=True)
    calibrations = {
        name: measure_calibration(
            measures["fit"]["same"][name], measures["test"]["same"][name], measures["test"]["different"][name]
        )
        for name in MEASURES
    }
    manifest = predictor.manifest
    return ChangeCalibration(
        model_name=manifest.name,
        model_version=manifest.version,
        model_sha256=manifest.onnx_sha256,
        created_at=datetime.now(UTC),
        data="HAM10000 (shared/data/ham10000), lesions with >= 2 images: thresholds fitted on train+val "
        "pairs, measured on test pairs",
        pair_counts=pair_counts,
        malignant_probability_delta=calibrations["malignant_probability_delta"],
        embedding_distance=calibrations["embedding_distance"],
        area_relative_change=calibrations["area_relative_change"],
        segmentation=SegmentationScore(
            split="test",
            images=len(dice_scores),
            dice_mean=float(np.mean(dice_scores)),
            dice_median=float(np.median(dice_scores)),
        ),
        notes=[
            "Same-lesion pairs are HAM10000 images sharing a lesion_id: mostly the same visit at another "
            "zoom, angle or light, some follow-ups. Their spread is the noise floor of re-imaging.",
            "Different-lesion pairs are random pairs of images of two different lesions (of different "
            "patients as a rule): an upper bound on change, easier to tell apart than a lesion that evolves.",
            "The area is the lesion's share of the image: a different zoom changes it as much as growth "
            "does, so the size flag needs images taken at the same magnification to mean growth.",
        ],
    )


def main(argv: list[str] | None = None) -> None:
    """Calibrate a bundle's change thresholds; write the JSON and the model card section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path(DEFAULT_DATA_ROOT) / "ham10000")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: the bundle's)")
    parser.add_argument("--max-lesions", type=int, default=0, help="smoke run: this many lesions per group")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.time()
    calibration = calibrate(args.bundle, args.data, args.threads, args.max_lesions)
    out = args.out or args.bundle / CALIBRATION_FILE
    out.write_text(calibration.model_dump_json(indent=2) + "\n")
    if args.out is None:
        write_lesion_change_section(args.bundle / "MODEL_CARD.md", calibration)
    log.info("wrote %s in %.1f min", out, (time.time() - start) / 60)


if __name__ == "__main__":
    main()
