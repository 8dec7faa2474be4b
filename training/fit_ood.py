"""Fit the bundle's full OOD detector and write it into the bundle.

    python -m training.fit_ood --bundle models/skintriage-effnet-lite0/1.0.0

Runs the bundle's ONNX model (serving preprocessing) on HAM10000 train and val. Fits the
Mahalanobis statistics and the kNN reference on TRAIN embeddings only. Chooses the rule on VAL
only: every score and OR-combination of up to three is thresholded to accept the target share of
val, then scored on a synthetic OOD proxy made from val images (noise, blur, patch shuffles,
colour permutations, inversions, grey, solid colours, low resolution). The shared OOD sets are
never seen here; `training.eval_ood` measures on them. Writes `ood_stats.npz` and bundle.json's
`ood_detector` (the seed `ood` dual criterion is left as it is).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from contracts.bundle import BundleManifest, OodDetector
from model_bundle.loader import load_manifest, sha256_file
from model_bundle.predictor import Predictor
from training.config import DEFAULT_DATA_ROOT
from training.data import load_ham10000, read_rgb
from training.ood import (
    ID_REJECTION_BUDGET,
    SCORE_NAMES,
    OodStats,
    acceptance_for_rejection_budget,
    all_scores,
    candidate_rules,
    fit_gaussian,
    fit_rule_thresholds,
    knn_reference,
    rank_score,
    rejects,
)

log = logging.getLogger("training.fit_ood")

ACCEPTANCE_GRID = (0.90, 0.95, 0.98, 0.99)
KNN_K = 5
# ood_stats.npz is float32 (the contract): a 1280-d precision matrix is 6.6 MB, so the kNN
# reference is capped to keep the whole bundle (model.onnx 13.5 MB) under 25 MB with room to spare.
KNN_REFERENCE_SIZE = 500
PROXY_IMAGES = 200
SEED = 0

Outputs = dict[str, NDArray[np.float32]]


def model_outputs(predictor: Predictor, images: Sequence[NDArray[np.uint8]], batch_size: int = 64) -> Outputs:
    """Logits and embeddings of HxWx3 uint8 images, preprocessed exactly as serving does (with
    no clinical metadata)."""
    io = predictor.manifest.io
    logits, embeddings = [], []
    for start in range(0, len(images), batch_size):
        # No clinical metadata: the OOD rule must hold for requests that carry none (a photo of
        # a pet rarely comes with a body site), and the embedding does not depend on it anyway.
        feeds = predictor.feeds([Image.fromarray(a) for a in images[start : start + batch_size]])
        out_logits, out_embedding = predictor.session.run([io.logits, io.embedding], feeds)
        logits.append(out_logits)
        embeddings.append(out_embedding)
    return {"logits": np.concatenate(logits), "embedding": np.concatenate(embeddings)}


def cached_outputs(
    predictor: Predictor, key: str, images: Sequence[NDArray[np.uint8]], cache_dir: Path | None
) -> Outputs:
    """`model_outputs`, cached by model sha256 and a hash of the pixels, so fit and eval run the
    network once per image set and a changed image set is never served stale outputs."""
    if cache_dir is None:
        return model_outputs(predictor, images)
    digest = hashlib.sha1()
    for a in images:
        digest.update(str(a.shape).encode())
        digest.update(np.ascontiguousarray(a).data)
    path = cache_dir / f"{predictor.manifest.onnx_sha256[:16]}-{key}-{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as npz:
            return {"logits": npz["logits"], "embedding": npz["embedding"]}
    out = model_outputs(predictor, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, logits=out["logits"], embedding=out["embedding"])
    return out


def ham_split(
    data_root: Path, split: str, limit_per_split: int
) -> tuple[list[NDArray[np.uint8]], NDArray[np.int64]]:
    """Decoded images and labels of one HAM10000 split (first `limit_per_split`, class round-robin)."""
    _, splits = load_ham10000(data_root / "ham10000", limit_per_split)
    data = splits[split]
    return [read_rgb(s.path) for s in data.samples], data.labels


def _patch_shuffle(a: NDArray[np.uint8], grid: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    h, w = (a.shape[0] // grid) * grid, (a.shape[1] // grid) * grid
    tiles = (
        a[:h, :w]
        .reshape(grid, h // grid, grid, w // grid, 3)
        .swapaxes(1, 2)
        .reshape(grid * grid, h // grid, w // grid, 3)
    )
    tiles = tiles[rng.permutation(grid * grid)]
    out = a.copy()  # rows/columns past the last whole tile stay where they were
    out[:h, :w] = tiles.reshape(grid, grid, h // grid, w // grid, 3).swapaxes(1, 2).reshape(h, w, 3)
    return out


def synthetic_proxy(
    images: Sequence[NDArray[np.uint8]], seed: int = SEED
) -> dict[str, list[NDArray[np.uint8]]]:
    """Non-dermoscopic images made from in-distribution ones, by kind: the stand-in OOD set on
    which the rule is chosen (the shared OOD sets stay unseen until evaluation)."""
    rng = np.random.default_rng(seed)
    proxy: dict[str, list[NDArray[np.uint8]]] = {
        k: []
        for k in (
            "uniform_noise",
            "blur",
            "patch_shuffle",
            "channel_permute",
            "invert",
            "grey",
            "solid_colour",
            "low_res",
        )
    }
    for a in images:
        h, w = a.shape[:2]
        img = Image.fromarray(a)
        proxy["uniform_noise"].append(rng.integers(0, 256, a.shape, dtype=np.uint8))
        proxy["blur"].append(np.asarray(img.filter(ImageFilter.GaussianBlur(radius=10))))
        proxy["patch_shuffle"].append(_patch_shuffle(a, int(rng.choice([4, 8])), rng))
        perm = [[2, 1, 0], [1, 2, 0], [2, 0, 1], [1, 0, 2]][int(rng.integers(4))]
        proxy["channel_permute"].append(np.ascontiguousarray(a[..., perm]))
        proxy["invert"].append(255 - a)
        proxy["grey"].append(np.asarray(img.convert("L").convert("RGB")))
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        proxy["solid_colour"].append(np.broadcast_to(colour, a.shape).copy())
        small = img.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.BILINEAR)
        proxy["low_res"].append(np.asarray(small.resize((w, h), Image.Resampling.NEAREST)))
    return proxy


def shifted_in_distribution(images: Sequence[NDArray[np.uint8]], seed: int = SEED) -> list[NDArray[np.uint8]]:
    """Val images as another clinic might send them (training's acquisition augmentation: casts,
    blur, JPEG, vignette, hair, zoom-out): in-distribution inputs the rule should still accept."""
    from training.augment import AugmentConfig, acquisition

    rng = np.random.default_rng(seed + 1)
    cfg = AugmentConfig()
    return [np.ascontiguousarray(acquisition(a, cfg, rng)) for a in images]


def select_rule(
    val_scores: dict[str, NDArray[np.float64]],
    proxy_scores: dict[str, dict[str, NDArray[np.float64]]],
    names: Sequence[str],
    target: float,
    shifted_scores: dict[str, NDArray[np.float64]] | None = None,
) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The rule with the lowest cost: mean acceptance of the OOD proxy (mean over kinds, so no
    kind dominates by count) plus, when `shifted_scores` is given, the share of shifted
    in-distribution images it rejects; worst proxy kind and fewer scores break ties. With every
    candidate's numbers."""
    table: list[dict[str, Any]] = []
    for rule in candidate_rules(names):
        thresholds, _ = fit_rule_thresholds(val_scores, rule, target)
        accepted = {k: float(1.0 - rejects(s, thresholds).mean()) for k, s in proxy_scores.items()}
        mean_accepted = float(np.mean(list(accepted.values())))
        shifted_rejected = float(rejects(shifted_scores, thresholds).mean()) if shifted_scores else 0.0
        table.append(
            {
                "rule": list(rule),
                "cost": mean_accepted + shifted_rejected,
                "proxy_mean_acceptance": mean_accepted,
                "proxy_worst_acceptance": max(accepted.values()),
                "shifted_id_rejection": shifted_rejected,
                "proxy_acceptance": accepted,
            }
        )
    table.sort(
        key=lambda r: (
            round(float(r["cost"]), 4),
            round(float(r["proxy_worst_acceptance"]), 4),
            len(r["rule"]),
        )
    )
    return tuple(table[0]["rule"]), table


def fit_detector(
    bundle_dir: Path,
    data_root: Path,
    limit_per_split: int = 0,
    cache_dir: Path | None = None,
    knn_k: int = KNN_K,
    knn_size: int = KNN_REFERENCE_SIZE,
    proxy_images: int = PROXY_IMAGES,
) -> tuple[OodDetector, OodStats, dict[str, Any]]:
    """Fit stats on train, choose the rule on val + its synthetic proxy; nothing is written."""
    predictor = Predictor(bundle_dir, intra_op_threads=2)
    manifest = predictor.manifest
    tag = f"lim{limit_per_split}"
    train_images, train_labels = ham_split(data_root, "train", limit_per_split)
    train = cached_outputs(predictor, f"train-{tag}", train_images, cache_dir)
    del train_images
    val_images, _ = ham_split(data_root, "val", limit_per_split)
    val = cached_outputs(predictor, f"val-{tag}", val_images, cache_dir)

    means, precision, shrinkage = fit_gaussian(train["embedding"], train_labels, len(manifest.classes))
    reference = knn_reference(train["embedding"], knn_size, SEED)
    k = min(knn_k, len(reference))
    oe = outlier_head_of(bundle_dir)
    stats = OodStats(means, precision, reference, *(oe or (None, None)))
    val_scores = all_scores(val["logits"], val["embedding"], manifest.temperature, stats, k)

    pick = np.random.default_rng(SEED).choice(
        len(val_images), size=min(proxy_images, len(val_images)), replace=False
    )
    proxy_scores = {}
    for kind, imgs in synthetic_proxy([val_images[i] for i in np.sort(pick)]).items():
        out = cached_outputs(predictor, f"proxy-{kind}-{tag}-{len(imgs)}", imgs, cache_dir)
        proxy_scores[kind] = all_scores(out["logits"], out["embedding"], manifest.temperature, stats, k)
    shifted_images = shifted_in_distribution([val_images[i] for i in np.sort(pick)])
    shifted = cached_outputs(predictor, f"shifted-{tag}-{len(shifted_images)}", shifted_images, cache_dir)
    shifted_scores = all_scores(shifted["logits"], shifted["embedding"], manifest.temperature, stats, k)
    names = [n for n in SCORE_NAMES if n in val_scores]
    # The level leaves room for sampling noise under the in-distribution rejection budget.
    target = acceptance_for_rejection_budget(len(val_images))
    rule, table = select_rule(val_scores, proxy_scores, names, target, shifted_scores)
    thresholds, accepted = fit_rule_thresholds(val_scores, rule, target)
    grid = {f"{t:.2f}": fit_rule_thresholds(val_scores, rule, t)[0] for t in ACCEPTANCE_GRID}
    best = table[0]
    selection = (
        f"Chosen on val only: each of {len(table)} rules (every score and OR-combination of up to 3) was "
        f"thresholded at one shared val quantile level to accept {target:.1%} of val jointly (the level at "
        f"which at most {ID_REJECTION_BUDGET:.0%} of in-distribution images are rejected with 95% "
        f"confidence on a new sample of {len(val_images)}), then "
        f"applied to a synthetic OOD proxy built from {len(pick)} val images ({', '.join(proxy_scores)}) "
        f"and to the same val images through training's acquisition augmentation (shifted in-distribution); "
        f"the rule with the lowest proxy acceptance (mean over kinds) plus shifted rejection wins, fewer "
        f"scores breaking ties. "
        f"{'+'.join(rule)}: proxy acceptance {float(best['proxy_mean_acceptance']):.4f} mean, "
        f"{float(best['proxy_worst_acceptance']):.4f} worst kind, shifted val rejected "
        f"{float(best['shifted_id_rejection']):.4f}; val acceptance {accepted:.4f}. "
        f"Stats on {len(train_labels)} train embeddings: Ledoit-Wolf shrinkage {shrinkage:.4f}; kNN "
        f"reference {len(reference)} random train embeddings (float32), k={k}. "
        + (
            "oe: the outlier-exposure head trained with the network on generated outliers "
            "(training/outliers.py). "
            if oe
            else ""
        )
        + "The shared OOD sets and scikit-image's samples were not used."
    )
    detector = OodDetector(
        fitted_on_sha256=manifest.onnx_sha256,
        knn_k=k,
        rule=rule,  # type: ignore[arg-type]  # names come from SCORE_NAMES, the contract's literals
        target_acceptance=target,
        thresholds={**{n: float(t) for n, t in thresholds.items()}},
        acceptance_grid=grid,
        selection=selection,
    )
    report: dict[str, Any] = {
        "val_acceptance": accepted,
        "ledoit_wolf_shrinkage": shrinkage,
        "n_train": len(train_labels),
        "n_val": len(val_images),
        "candidates": table,
        "val_rank_max": float(rank_score(val_scores, val_scores, rule).max()),
    }
    return detector, stats, report


OE_HEAD_FILE = "oe_head.npz"


def outlier_head_of(bundle_dir: Path) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """The outlier-exposure head (weight, bias) that build_bundle staged beside the model, or
    the one already in the bundle's ood_stats.npz (a refit); None for a model without one."""
    staged = bundle_dir / OE_HEAD_FILE
    if staged.is_file():
        with np.load(staged) as npz:
            return npz["weight"].astype(np.float32), npz["bias"].astype(np.float32)
    existing = bundle_dir / "ood_stats.npz"
    if existing.is_file():
        stats = OodStats.load(existing)
        if stats.oe_weight is not None and stats.oe_bias is not None:
            return stats.oe_weight, stats.oe_bias
    return None


def write_detector(bundle_dir: Path, detector: OodDetector, stats: OodStats) -> BundleManifest:
    """Write ood_stats.npz and bundle.json's `ood_detector`; the result must load like serving.
    The staged outlier-exposure head now lives in ood_stats.npz, so its staging file goes."""
    body = json.loads((bundle_dir / "bundle.json").read_text())
    onnx_file = BundleManifest.model_validate(body).onnx_file
    if sha256_file(bundle_dir / onnx_file) != detector.fitted_on_sha256:
        raise ValueError("the detector was fitted on a different model.onnx than this bundle's")
    stats.save(bundle_dir / detector.stats_file)
    body["ood_detector"] = detector.model_dump(mode="json")
    manifest = BundleManifest.model_validate(body)
    (bundle_dir / "bundle.json").write_text(manifest.model_dump_json(indent=2) + "\n")
    (bundle_dir / OE_HEAD_FILE).unlink(missing_ok=True)
    return load_manifest(bundle_dir)


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
    parser.add_argument("--knn-k", type=int, default=KNN_K)
    parser.add_argument("--knn-size", type=int, default=KNN_REFERENCE_SIZE)
    parser.add_argument("--proxy-images", type=int, default=PROXY_IMAGES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    detector, stats, report = fit_detector(
        args.bundle,
        args.data_root,
        args.limit_per_split,
        None if args.no_cache else args.cache_dir,
        args.knn_k,
        args.knn_size,
        args.proxy_images,
    )
    write_detector(args.bundle, detector, stats)
    for row in report["candidates"][:8]:
        log.info("candidate %s", row)
    log.info("rule %s thresholds %s -> %s", detector.rule, detector.thresholds, args.bundle)


if __name__ == "__main__":
    main()
