"""Lesion-grouped k-fold cross-validation for model selection.

    python -m training.kfold --config training/configs/effnet_lite0.yaml --folds 5 epochs=4

Pools `train` and `val` (never `test`), deals whole lesions to folds stratified by class, trains
one model per fold on the other folds with early stopping on its held-out fold, and writes the
per-fold and mean/std validation balanced accuracy to `<out_dir>/kfold.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from training.config import load_config
from training.data import SplitData, grouped_kfold
from training.train import load_dataset, train

log = logging.getLogger("training.kfold")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML file of config overrides")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    classes, splits = load_dataset(cfg)
    pool = SplitData(splits["train"].samples + splits["val"].samples)
    pool.load_pixels()
    results = []
    for fold, (train_idx, held_idx) in enumerate(grouped_kfold(pool.samples, args.folds, cfg.seed)):
        fold_data = {
            "train": SplitData([pool.samples[i] for i in train_idx], [pool.pixels[i] for i in train_idx]),
            "val": SplitData([pool.samples[i] for i in held_idx], [pool.pixels[i] for i in held_idx]),
        }
        fold_cfg = dataclasses.replace(cfg, out_dir=str(Path(cfg.out_dir) / f"fold{fold}"))
        best = train(fold_cfg, (classes, fold_data))
        score = float(torch.load(best, map_location="cpu", weights_only=False)["best_score"])
        results.append(
            {"fold": fold, "train": len(train_idx), "held_out": len(held_idx), "val_balanced_accuracy": score}
        )
        log.info("fold %d: val balanced accuracy %.4f", fold, score)
    scores = [r["val_balanced_accuracy"] for r in results]
    summary = {
        "folds": results,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "config": cfg.to_dict(),
    }
    out = Path(cfg.out_dir) / "kfold.json"
    out.write_text(json.dumps(summary, indent=2))
    log.info("k-fold balanced accuracy %.4f +/- %.4f -> %s", summary["mean"], summary["std"], out)


if __name__ == "__main__":
    main()
