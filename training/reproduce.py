"""`make train`: reproduce the shipped bundle from scratch and time each step.

    python -m training.reproduce [key=value ...]

1. train the candidates (CANDIDATE_CONFIGS; resumable: a rerun continues from each run's
   last.pt, so `make train` may be stopped and started again across sessions);
2. build the bundle from them (the best on `val` ships; int8 measured, not shipped);
3. fit the OOD detector on its train embeddings (`make fit-ood`) and measure it (`make eval-ood`);
4. measure the shipped model on `test` by skin tone and subgroup (`make evaluate`), and on the
   shift benchmark (`make eval-shift`); record both in bundle.json's `robustness`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from training import build_bundle, change_calibration, eval_ood, eval_shift, evaluate, fit_ood
from training.config import load_config
from training.robustness import write_robustness
from training.train import train

log = logging.getLogger("training.reproduce")

BUNDLE_NAME, BUNDLE_VERSION = "skintriage-effnet-lite0", "2.0.1"
CANDIDATE_CONFIGS = ("training/configs/effnet_lite0_v2.yaml", "training/configs/effnet_lite0_v2_lowlr.yaml")
# `make ablate` (run separately: it trains its own variants) leaves its summary here; the card
# shows it when present.
ABLATIONS = "runs/ablations/summary.json"


def training_seconds(out_dir: Path) -> float:
    """Wall seconds of every epoch a run's history.jsonl records (0 when it has none)."""
    history = out_dir / "history.jsonl"
    if not history.is_file():
        return 0.0
    return float(sum(json.loads(line)["seconds"] for line in history.read_text().splitlines() if line))


def main(argv: list[str] | None = None) -> None:
    """Run every step; extra `key=value` args override every training config."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.time()
    configs = [load_config(path, overrides) for path in CANDIDATE_CONFIGS]
    checkpoints = [str(train(cfg)) for cfg in configs]
    # A resumed run spans sessions: its history has every epoch's time, this process only some.
    minutes = sum(training_seconds(Path(cfg.out_dir)) for cfg in configs) / 60
    log.info("training took %.1f min in all (epochs and validation, from history.jsonl)", minutes)
    build_bundle.main(
        [
            "--candidates",
            *checkpoints,
            "--name",
            BUNDLE_NAME,
            "--version",
            BUNDLE_VERSION,
            "--quantize",
            "--ablations",
            ABLATIONS,
            "--train-minutes",
            f"{minutes:.0f} minutes of training (sum of the epochs in history.jsonl) on this machine",
        ]
    )
    bundle = f"models/{BUNDLE_NAME}/{BUNDLE_VERSION}"
    fit_ood.main(["--bundle", bundle])
    eval_ood.main(["--bundle", bundle])
    evaluate.main(["--bundle", bundle, "--split", "test"])
    eval_shift.main(["--bundle", bundle])
    # Issue 12: the lesion-change thresholds and segmentation Dice (change_calibration.json, card section).
    change_calibration.main(["--bundle", bundle])
    manifest = write_robustness(Path(bundle))
    log.info("robustness: %s", json.dumps(manifest.robustness.model_dump() if manifest.robustness else None))
    log.info("make train finished in %.1f min", (time.time() - start) / 60)


if __name__ == "__main__":
    main()
