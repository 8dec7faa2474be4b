"""Fine-tune a model on a dataset's train split; early-stop on val balanced accuracy.

    python -m training.train [--config cfg.yaml] [key=value ...]

Writes `<out_dir>/last.pt` every epoch (resumable: model, optimizer, scheduler, EMA weights,
counters), `<out_dir>/best.pt` on improvement (the raw or the EMA weights, whichever scored), and
`<out_dir>/history.jsonl`. Every checkpoint carries the resolved config and seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import WeightedRandomSampler
from tqdm import tqdm

from contracts.bundle import ColourConstancy, MetadataEncoding, Preprocessing
from model_bundle.metadata import encode_metadata
from model_bundle.preprocessing import preprocess
from training.augment import AugmentConfig, augment, augmented_view
from training.config import TrainConfig, load_config
from training.data import SplitData, load_folders, load_ham10000, metadata_encoding, sample_metadata
from training.metrics import balanced_accuracy, macro_auc
from training.models import LITE_MEAN, LITE_STD, LiteBiLSTM, LiteClassifier, build_model, early_modules

log = logging.getLogger("training")


def preprocessing_for(cfg: TrainConfig) -> Preprocessing:
    """The serving-side preprocessing constants implied by a config."""
    colour = ColourConstancy(power=cfg.colour_constancy_power) if cfg.colour_constancy else None
    if cfg.resize_policy == "letterbox":
        return Preprocessing(
            resize_policy="letterbox",
            input_width=cfg.input_width,
            input_height=cfg.input_height,
            orient_landscape=True,
            pad_value=0.0,
            colour_constancy=colour,
            scale=1.0 / 255.0,
            mean=LITE_MEAN,
            std=LITE_STD,
        )
    return Preprocessing(
        resize_shorter_to=cfg.resize_shorter_to,
        crop_size=cfg.image_size,
        colour_constancy=colour,
        scale=1.0 / 255.0,
        mean=LITE_MEAN,
        std=LITE_STD,
    )


def metadata_spec_for(cfg: TrainConfig) -> MetadataEncoding | None:
    """The metadata encoding of a config's model; None for an image-only model."""
    return metadata_encoding() if cfg.metadata_fusion else None


def augment_config_for(cfg: TrainConfig) -> AugmentConfig:
    """The augmentation settings of a config."""
    return AugmentConfig(
        crop_scale_min=cfg.crop_scale_min, color_jitter=cfg.color_jitter, shift_families=cfg.shift_augment
    )


def load_dataset(cfg: TrainConfig) -> tuple[list[str], dict[str, SplitData]]:
    """Classes and splits for the config's dataset layout."""
    if cfg.dataset == "ham10000":
        return load_ham10000(Path(cfg.data_root) / "ham10000", cfg.limit_per_split)
    if cfg.dataset == "folders":
        return load_folders(Path(cfg.folder_root), cfg.limit_per_split)
    raise SystemExit(f"unknown dataset {cfg.dataset!r}")


def build_for(cfg: TrainConfig, num_classes: int, pretrained: bool) -> LiteClassifier | LiteBiLSTM:
    """The network a config describes (ImageNet weights only when `pretrained`)."""
    spec = metadata_spec_for(cfg)
    return build_model(
        cfg.arch,
        num_classes,
        max(preprocessing_for(cfg).input_hw),
        pretrained,
        cfg.dropout,
        cfg.lstm_hidden,
        cfg.lstm_layers,
        metadata_dim=spec.dim if spec else 0,
        outlier_head=cfg.outlier_exposure > 0,
    )


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(labels: np.ndarray, num_classes: int, power: float) -> torch.Tensor:
    """(N / n_c) ** power, normalised to mean 1 over samples."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = (len(labels) / np.maximum(counts, 1.0)) ** power
    weights /= (weights[labels]).mean()
    return torch.tensor(weights, dtype=torch.float32)


def lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    """Linear warm-up then cosine decay to 1% of the peak rate."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def split_metadata(split: SplitData, spec: MetadataEncoding | None) -> NDArray[np.float32] | None:
    """Every sample's encoded metadata (N x dim), or None for an image-only model."""
    if spec is None:
        return None
    return np.stack([encode_metadata(spec, *sample_metadata(s)) for s in split.samples])


def _forward(
    model: nn.Module, x: torch.Tensor, metadata: NDArray[np.float32] | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    meta = torch.from_numpy(metadata) if metadata is not None else None
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = model(x, meta)
    return out


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    split: SplitData,
    spec: Preprocessing,
    batch_size: int = 64,
    metadata: NDArray[np.float32] | None = None,
) -> dict[str, np.ndarray]:
    """Logits and embeddings on a split, through the *serving* preprocessing."""
    model.eval()
    logits, embeddings = [], []
    for start in range(0, len(split.samples), batch_size):
        chunk = range(start, min(start + batch_size, len(split.samples)))
        batch = np.stack([preprocess(_image(split, i), spec) for i in chunk])
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        meta = metadata[start : start + len(chunk)] if metadata is not None else None
        out_logits, out_embedding, _ = _forward(model, x, meta)
        logits.append(out_logits.float().numpy())
        embeddings.append(out_embedding.float().numpy())
    return {"logits": np.concatenate(logits), "embedding": np.concatenate(embeddings)}


def _image(split: SplitData, i: int) -> Image.Image:
    if split.pixels:
        return Image.fromarray(split.pixels[i])
    return Image.open(split.samples[i].path)


def _dropped_metadata(
    split: SplitData, idx: NDArray[np.int64], spec: MetadataEncoding, drop: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Encoded metadata of a batch with each field independently dropped with probability `drop`."""
    rows = []
    for i in idx:
        fields = [None if rng.random() < drop else value for value in sample_metadata(split.samples[i])]
        rows.append(encode_metadata(spec, *fields))  # type: ignore[arg-type]  # (age, sex, site) order
    return np.stack(rows)


def _outlier_metadata(count: int, spec: MetadataEncoding, rng: np.random.Generator) -> NDArray[np.float32]:
    """Random (often missing) metadata for outliers: a request with a pet photo may carry any."""
    rows = []
    for _ in range(count):
        age = float(rng.integers(0, 90)) if rng.random() < 0.5 else None
        sex = str(rng.choice(spec.sex_values)) if rng.random() < 0.5 else None
        site = str(rng.choice(spec.site_values)) if rng.random() < 0.5 else None
        rows.append(encode_metadata(spec, age, sex, site))
    return np.stack(rows)


class _Scores:
    """What one epoch's validation measured for one set of weights."""

    def __init__(self, logits: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
        preds = logits.argmax(axis=1)
        self.balanced_accuracy = balanced_accuracy(labels, preds, num_classes)
        self.accuracy = float((preds == labels).mean())
        probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
        self.macro_auc = macro_auc(labels, probs, num_classes)

    def selection(self, metric: str) -> float:
        """The value a checkpoint is chosen by: balanced accuracy, or its mean with macro AUC
        (steadier: val's smallest classes have 15 and 18 images, so one image moves balanced
        accuracy by about 1%)."""
        if metric == "mean_ba_auc":
            return (self.balanced_accuracy + self.macro_auc) / 2
        if metric == "balanced_accuracy":
            return self.balanced_accuracy
        raise ValueError(f"unknown select_metric {metric!r}")


def _freeze(model: LiteClassifier | LiteBiLSTM, cfg: TrainConfig) -> list[nn.Module]:
    """Freeze what the config says; returns the modules to keep in eval mode while training."""
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
        return [model.backbone]
    if cfg.freeze_early:
        modules = early_modules(model.backbone)
        for module in modules:
            module.requires_grad_(False)
        return modules
    return []


def train(cfg: TrainConfig, dataset: tuple[list[str], dict[str, SplitData]] | None = None) -> Path:
    """Run (or resume) training; returns the path of the best checkpoint. `dataset` overrides
    the config's data (k-fold cross-validation passes its folds this way)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    classes, splits = dataset or load_dataset(cfg)
    train_split, val_split = splits["train"], splits["val"]
    t0 = time.time()
    for split in (train_split, val_split):
        if not split.pixels:
            split.load_pixels()
    log.info(
        "loaded %d train / %d val images in %.0fs",
        len(train_split.samples),
        len(val_split.samples),
        time.time() - t0,
    )
    spec = preprocessing_for(cfg)
    meta_spec = metadata_spec_for(cfg)
    aug_cfg = augment_config_for(cfg)
    model = build_for(cfg, len(classes), cfg.pretrained)
    if cfg.backbone_checkpoint:
        state = torch.load(cfg.backbone_checkpoint, map_location="cpu", weights_only=False)["model"]
        backbone_state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
        model.backbone.load_state_dict(backbone_state)
    frozen = _freeze(model, cfg)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack memory_format
    ema = (
        AveragedModel(
            model,
            multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),  # type: ignore[no-untyped-call]
            use_buffers=True,
        )
        if cfg.ema_decay > 0
        else None
    )
    outliers: list[NDArray[np.uint8]] = []
    if cfg.outlier_exposure > 0:
        from training.outliers import outlier_pool

        outliers = outlier_pool(cfg.outlier_pool_size, cfg.seed)
        log.info("outlier-exposure pool: %d generated images", len(outliers))

    labels = train_split.labels
    criterion = nn.CrossEntropyLoss(
        weight=class_weights(labels, len(classes), cfg.class_weight_power),
        label_smoothing=cfg.label_smoothing,
    )
    head_ids = {id(p) for p in model.head_parameters()}
    backbone_params = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    groups = [{"params": model.head_parameters(), "lr": cfg.lr * cfg.head_lr_multiplier}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": cfg.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(cfg.epochs * steps_per_epoch, max(1, int(cfg.warmup_epochs * steps_per_epoch)))
    )

    start_epoch, best_score, stale = 0, -1.0, 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    if cfg.resume and last_path.exists():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.load_state_dict(ckpt["ema"])
        start_epoch, best_score, stale = ckpt["epoch"] + 1, ckpt["best_score"], ckpt["stale"]
        log.info(
            "resumed from %s at epoch %d (best val %s %.4f)",
            last_path,
            start_epoch,
            cfg.select_metric,
            best_score,
        )

    val_meta = split_metadata(val_split, meta_spec)
    sample_weights = class_weights(labels, len(classes), 1.0)[labels] if cfg.weighted_sampler else None
    last_epoch = min(cfg.epochs, cfg.stop_epoch) if cfg.stop_epoch > 0 else cfg.epochs
    for epoch in range(start_epoch, last_epoch):
        if stale >= cfg.patience:
            log.info("early stop: no val improvement for %d epochs", stale)
            break
        rng = np.random.default_rng(cfg.seed * 1000 + epoch)
        torch.manual_seed(cfg.seed * 1000 + epoch)
        if sample_weights is not None:
            generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            sampler = WeightedRandomSampler(
                sample_weights.tolist(), len(labels), replacement=True, generator=generator
            )
            order = np.fromiter(sampler, dtype=np.int64, count=len(labels))
        else:
            order = rng.permutation(len(labels))
        model.train()
        for module in frozen:
            module.eval()  # keep the frozen layers' BatchNorm statistics
        running, seen, t_epoch = 0.0, 0, time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", mininterval=30)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            views = [augment(train_split.pixels[i], spec, aug_cfg, rng) for i in idx]
            meta = (
                _dropped_metadata(train_split, idx, meta_spec, cfg.metadata_drop, rng) if meta_spec else None
            )
            n_out = cfg.outliers_per_batch if outliers else 0
            if n_out:
                picks = rng.integers(0, len(outliers), n_out)
                views += [
                    preprocess(Image.fromarray(augmented_view(outliers[int(j)], aug_cfg, rng)), spec)
                    for j in picks
                ]
                if meta is not None and meta_spec is not None:
                    meta = np.concatenate([meta, _outlier_metadata(n_out, meta_spec, rng)])
            x = torch.from_numpy(np.stack(views)).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(labels[idx])
            logits, embedding, _ = _forward(model, x, meta)
            loss = criterion(logits[: len(idx)], y)
            if n_out and isinstance(model, LiteClassifier) and model.oe_head is not None:
                is_outlier = torch.zeros(len(views))
                is_outlier[len(idx) :] = 1.0
                oe_logit = model.oe_head(embedding).squeeze(1)
                head_loss = nn.functional.binary_cross_entropy_with_logits(oe_logit, is_outlier)
                # Hendrycks et al.'s OE term: outliers should get a uniform class posterior.
                uniform_loss = -torch.log_softmax(logits[len(idx) :], dim=1).mean()
                loss = loss + cfg.outlier_exposure * (head_loss + uniform_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        candidates: dict[str, nn.Module] = {"raw": model}
        if ema is not None:
            candidates["ema"] = ema.module
        scored = {
            name: _Scores(
                evaluate(weights, val_split, spec, metadata=val_meta)["logits"],
                val_split.labels,
                len(classes),
            )
            for name, weights in candidates.items()
        }
        pick = max(scored, key=lambda n: scored[n].selection(cfg.select_metric))
        score = scored[pick].selection(cfg.select_metric)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": running / max(seen, 1),
            "val_score": score,
            "val_balanced_accuracy": scored[pick].balanced_accuracy,
            "val_accuracy": scored[pick].accuracy,
            "val_macro_auc": scored[pick].macro_auc,
            "weights": pick,
            "seconds": round(time.time() - t_epoch, 1),
        }
        for name, s in scored.items():
            record[f"{name}_val"] = {
                "balanced_accuracy": round(s.balanced_accuracy, 4),
                "accuracy": round(s.accuracy, 4),
                "macro_auc": round(s.macro_auc, 4),
            }
        improved = score > best_score
        best_score, stale = (score, 0) if improved else (best_score, stale + 1)
        ckpt = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "epoch": epoch,
            "best_score": best_score,
            "stale": stale,
            "config": cfg.to_dict(),
            "classes": classes,
        }
        torch.save(ckpt, last_path)
        if improved:
            best = {"model": candidates[pick].state_dict(), "weights": pick}
            best |= {k: ckpt[k] for k in ("epoch", "best_score", "config", "classes")}
            torch.save(best, best_path)
        with (out / "history.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        log.info("epoch %d: %s%s", epoch + 1, json.dumps(record), " (best)" if improved else "")
    return best_path


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML file of config overrides")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config, args.overrides)
    log.info("config: %s", json.dumps(cfg.to_dict()))
    best = train(cfg)
    log.info("best checkpoint: %s", best)


if __name__ == "__main__":
    main()
