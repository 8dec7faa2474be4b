"""`make train`: reproduce the shipped bundle from scratch and time each step.

    python -m training.reproduce

1. fine-tune EfficientNet-Lite0 (training/configs/effnet_lite0.yaml);
2. train the CNN + BiLSTM hybrid on that backbone (training/configs/effnet_lite0_bilstm.yaml);
3. build the bundle from both candidates (the better one on `val` ships), with int8 measured;
4. fit the OOD detector on its train embeddings and measure it (fit_ood, eval_ood).
"""

from __future__ import annotations

import logging
import sys
import time

from training import build_bundle, eval_ood, fit_ood
from training.config import load_config
from training.train import train

log = logging.getLogger("training.reproduce")

BUNDLE_NAME, BUNDLE_VERSION = "skintriage-effnet-lite0", "1.0.0"
CONFIGS = ("training/configs/effnet_lite0.yaml", "training/configs/effnet_lite0_bilstm.yaml")


def main(argv: list[str] | None = None) -> None:
    """Run the three steps; extra `key=value` args override both training configs."""
    overrides = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.time()
    checkpoints = [str(train(load_config(path, overrides))) for path in CONFIGS]
    minutes = (time.time() - start) / 60
    log.info("training took %.1f min", minutes)
    build_bundle.main(
        [
            "--candidates",
            *checkpoints,
            "--quantize",
            "--train-minutes",
            f"{minutes:.0f} minutes of training on this machine",
        ]
    )
    bundle = f"models/{BUNDLE_NAME}/{BUNDLE_VERSION}"
    fit_ood.main(["--bundle", bundle])
    eval_ood.main(["--bundle", bundle])
    log.info("make train finished in %.1f min", (time.time() - start) / 60)


if __name__ == "__main__":
    main()
