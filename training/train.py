"""Fine-tune a model on a dataset's train split; early-stop on val balanced accuracy.

    python -m training.train [--config cfg.yaml] [key=value ...]

Writes `<out_dir>/last.pt` every epoch (resumable), `<out_dir>/best.pt` on improvement, and
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
from PIL import Image
from torch import nn
from torch.utils.data import WeightedRandomSampler
from tqdm import tqdm

from contracts.bundle import Preprocessing
from model_bundle.preprocessing import preprocess
from training.augment import augment
from training.config import TrainConfig, load_config
from training.data import SplitData, load_folders, load_ham10000
from training.metrics import balanced_accuracy
from training.models import LITE_MEAN, LITE_STD, build_model

log = logging.getLogger("training")


def preprocessing_for(cfg: TrainConfig) -> Preprocessing:
    """The serving-side preprocessing constants implied by a config."""
    return Preprocessing(
        resize_shorter_to=cfg.resize_shorter_to,
        crop_size=cfg.image_size,
        scale=1.0 / 255.0,
        mean=LITE_MEAN,
        std=LITE_STD,
    )


def load_dataset(cfg: TrainConfig) -> tuple[list[str], dict[str, SplitData]]:
    """Classes and splits for the config's dataset layout."""
    if cfg.dataset == "ham10000":
        return load_ham10000(Path(cfg.data_root) / "ham10000", cfg.limit_per_split)
    if cfg.dataset == "folders":
        return load_folders(Path(cfg.folder_root), cfg.limit_per_split)
    raise SystemExit(f"unknown dataset {cfg.dataset!r}")


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


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: SplitData, spec: Preprocessing, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Logits and embeddings on a split, through the *serving* preprocessing."""
    model.eval()
    logits, embeddings = [], []
    for start in range(0, len(split.samples), batch_size):
        chunk = range(start, min(start + batch_size, len(split.samples)))
        batch = np.stack([preprocess(_image(split, i), spec) for i in chunk])
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        out_logits, out_embedding, _ = model(x)
        logits.append(out_logits.float().numpy())
        embeddings.append(out_embedding.float().numpy())
    return {"logits": np.concatenate(logits), "embedding": np.concatenate(embeddings)}


def _image(split: SplitData, i: int) -> Image.Image:
    if split.pixels:
        return Image.fromarray(split.pixels[i])
    return Image.open(split.samples[i].path)


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
    model = build_model(
        cfg.arch, len(classes), cfg.image_size, cfg.pretrained, cfg.dropout, cfg.lstm_hidden, cfg.lstm_layers
    )
    if cfg.backbone_checkpoint:
        state = torch.load(cfg.backbone_checkpoint, map_location="cpu", weights_only=False)["model"]
        backbone_state = {
            k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
        }
        model.backbone.load_state_dict(backbone_state)
    if cfg.freeze_backbone:
        model.backbone.requires_grad_(False)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack memory_format

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
        start_epoch, best_score, stale = ckpt["epoch"] + 1, ckpt["best_score"], ckpt["stale"]
        log.info("resumed from %s at epoch %d (best val bal-acc %.4f)", last_path, start_epoch, best_score)

    sample_weights = class_weights(labels, len(classes), 1.0)[labels] if cfg.weighted_sampler else None
    for epoch in range(start_epoch, cfg.epochs):
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
        if cfg.freeze_backbone:
            model.backbone.eval()  # keep BatchNorm statistics of the frozen backbone
        running, seen, t_epoch = 0.0, 0, time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", mininterval=30)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            batch = np.stack(
                [augment(train_split.pixels[i], spec, cfg.crop_scale_min, cfg.color_jitter, rng) for i in idx]
            )
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(labels[idx])
            loss = criterion(model(x)[0], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach()) * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        val = evaluate(model, val_split, spec)
        val_preds = val["logits"].argmax(axis=1)
        score = balanced_accuracy(val_split.labels, val_preds, len(classes))
        record = {
            "epoch": epoch + 1,
            "train_loss": running / max(seen, 1),
            "val_balanced_accuracy": score,
            "val_accuracy": float((val_preds == val_split.labels).mean()),
            "seconds": round(time.time() - t_epoch, 1),
        }
        improved = score > best_score
        best_score, stale = (score, 0) if improved else (best_score, stale + 1)
        ckpt = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch,
            "best_score": best_score,
            "stale": stale,
            "config": cfg.to_dict(),
            "classes": classes,
        }
        torch.save(ckpt, last_path)
        if improved:
            torch.save({k: ckpt[k] for k in ("model", "epoch", "best_score", "config", "classes")}, best_path)
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
