"""Typed training configuration: visible defaults, overridable from YAML and `key=value` args."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The data lives beside the repo (../shared/data) and is never copied in; override with the env.
DEFAULT_DATA_ROOT = os.environ.get(
    "SKINTRIAGE_DATA_ROOT", str(Path(__file__).resolve().parents[2] / "shared" / "data")
)


@dataclass
class TrainConfig:
    # data
    data_root: str = DEFAULT_DATA_ROOT
    dataset: str = "ham10000"  # "ham10000" (metadata.csv layout) or "folders" (class-per-folder)
    folder_root: str = ""  # for dataset=folders: root with train/ val/ test/ subfolders
    limit_per_split: int = 0  # >0 keeps only this many images per split (smoke tests)
    # model
    arch: str = "effnet_lite0"  # "effnet_lite0", "effnet_lite1", "effnet_lite2" or "effnet_lite0_bilstm"
    pretrained: bool = True
    # input geometry: 1.0.0's centre crop (shorter side -> resize_shorter_to, image_size square),
    # or 2.0's letterbox (the whole image, turned landscape, on an input_width x input_height canvas)
    resize_policy: str = "shorter_side_center_crop"  # or "letterbox"
    image_size: int = 160  # centre crop: crop size fed to the network, px
    resize_shorter_to: int = 160
    input_width: int = 224  # letterbox canvas, px
    input_height: int = 168
    colour_constancy: bool = False  # Shades of Gray in the bundle's preprocessing
    colour_constancy_power: float = 6.0
    metadata_fusion: bool = False  # age, sex and body site fused into the logits
    metadata_drop: float = 0.5  # each field dropped (encoded as missing) with this probability
    freeze_early: bool = False  # freeze the stem and stride-4 stages (their BatchNorm too)
    dropout: float = 0.3
    lstm_hidden: int = 128
    lstm_layers: int = 2
    freeze_backbone: bool = False  # bilstm head on a frozen, already fine-tuned backbone
    backbone_checkpoint: str = ""  # state dict to initialise the backbone from
    # optimisation
    epochs: int = 14
    batch_size: int = 32
    lr: float = 1e-3
    head_lr_multiplier: float = 3.0
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    class_weight_power: float = 0.5  # weight_c = (N / n_c) ** power; 0 = unweighted, 1 = inverse
    weighted_sampler: bool = False
    patience: int = 4  # early stopping on the val selection metric
    select_metric: str = "balanced_accuracy"  # or "mean_ba_auc": the mean of it and macro AUC
    stop_epoch: int = 0  # >0: stop after this many epochs of the schedule (equal-budget ablations)
    ema_decay: float = 0.0  # >0: also keep an exponential moving average of the weights
    outlier_exposure: float = 0.0  # >0: weight of the outlier-exposure losses (dermoscopy-vs-not)
    outliers_per_batch: int = 6
    outlier_pool_size: int = 2000
    # augmentation
    crop_scale_min: float = 0.4
    color_jitter: float = 0.2
    shift_augment: bool = False  # the acquisition families of training.augment (casts, blur, ...)
    # run
    seed: int = 1234
    threads: int = 2
    out_dir: str = "runs/effnet_lite0"
    resume: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict copy, saved in every checkpoint and in the bundle."""
        return dataclasses.asdict(self)


def _coerce(raw: str, like: Any) -> Any:
    if isinstance(like, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(raw)
    if isinstance(like, float):
        return float(raw)
    return raw


def load_config(yaml_path: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then a YAML file, then `key=value` overrides; unknown keys are errors."""
    cfg = TrainConfig()
    known = {f.name for f in dataclasses.fields(cfg)}
    values: dict[str, Any] = {}
    if yaml_path:
        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        values.update(loaded)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"override must be key=value, got {item!r}")
        values[key] = _coerce(raw, getattr(cfg, key, raw)) if key in known else raw
    unknown = set(values) - known
    if unknown:
        raise SystemExit(f"unknown config keys: {sorted(unknown)}")
    return dataclasses.replace(cfg, **values)
