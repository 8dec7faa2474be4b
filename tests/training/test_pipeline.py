"""A tiny but real run of the training pipeline: train -> export -> bundle -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from model_bundle.predictor import Predictor
from tests.conftest import DATA_ROOT
from training import build_bundle
from training.config import load_config
from training.data import SplitData, grouped_kfold, load_folders, load_ham10000
from training.export import ExportMismatchError, export_onnx, load_checkpoint, verify_onnx
from training.train import evaluate, preprocessing_for, train

TINY = [
    "limit_per_split=28",
    "epochs=1",
    "batch_size=8",
    "image_size=64",
    "resize_shorter_to=72",
    "threads=2",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train both architectures for one epoch on 28 images per split and build a bundle."""
    root = tmp_path_factory.mktemp("run")
    data = f"data_root={DATA_ROOT}"
    lite = train(load_config(None, [*TINY, data, f"out_dir={root / 'lite'}"]))
    hybrid = train(
        load_config(
            None,
            [
                *TINY,
                data,
                "arch=effnet_lite0_bilstm",
                f"backbone_checkpoint={lite}",
                "freeze_backbone=true",
                f"out_dir={root / 'hybrid'}",
            ],
        )
    )
    build_bundle.main(
        [
            "--candidates",
            str(lite),
            str(hybrid),
            "--name",
            "tiny",
            "--version",
            "0.0.1",
            "--out",
            str(root / "models"),
            "--staging",
            str(root / "staging"),
        ]
    )
    return {"lite": lite, "hybrid": hybrid, "bundle": root / "models" / "tiny" / "0.0.1"}


def test_tiny_training_run_writes_a_bundle_that_validates(tiny_run: dict[str, Path]) -> None:
    bundle = tiny_run["bundle"]
    manifest = load_manifest(bundle)  # validates bundle.json and the model's sha256
    assert manifest.opset >= 17
    assert manifest.io.input_shape == (None, 3, 64, 64)
    assert (
        0
        <= manifest.triage.routine_malignant_probability
        <= manifest.triage.urgent_malignant_probability
        <= 1
    )
    assert manifest.provenance.config["epochs"] == 1
    for name in (
        "MODEL_CARD.md",
        "plots/confusion_matrix.png",
        "plots/roc_curves.png",
        "plots/reliability.png",
        "metrics_test.json",
    ):
        assert (bundle / name).is_file(), name
    card = (bundle / "MODEL_CARD.md").read_text()
    assert "CC BY-NC-SA 4.0" in card and "not a diagnosis" in card
    assert "EfficientNet-Lite0 + BiLSTM" in card  # both architectures are reported
    assert (bundle / "model.onnx").stat().st_size < 25 * 1024 * 1024


def test_bundle_onnx_outputs_match_pytorch_on_real_images(
    tiny_run: dict[str, Path], ham_images: list[Path]
) -> None:
    manifest = load_manifest(tiny_run["bundle"])
    chosen = tiny_run["lite"] if manifest.io.classifier == "linear_on_pooled_features" else tiny_run["hybrid"]
    model, _, _ = load_checkpoint(chosen)
    predictor = Predictor(tiny_run["bundle"])
    batch = predictor.tensor([Image.open(p) for p in ham_images[:6]])
    assert verify_onnx(model, tiny_run["bundle"] / "model.onnx", batch) <= 1e-4


def test_prediction_api_loads_the_bundle_and_predicts_an_image_file(
    tiny_run: dict[str, Path], ham_images: list[Path]
) -> None:
    predictor = Predictor(tiny_run["bundle"])
    prediction = predictor.predict_file(ham_images[0])
    assert set(prediction.probabilities) == set(predictor.manifest.class_codes)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction.triage_level in {"urgent", "routine", "monitor"}
    assert prediction.conformal_set and prediction.top_class in predictor.manifest.class_codes


def test_export_refuses_a_graph_that_disagrees_with_pytorch(
    tiny_run: dict[str, Path], tmp_path: Path
) -> None:
    model, cfg, _ = load_checkpoint(tiny_run["lite"])
    export_onnx(model, cfg.image_size, tmp_path / "m.onnx")
    with torch.no_grad():
        model.fc.bias.add_(1.0)  # the PyTorch model now differs from what was exported
    batch = np.random.default_rng(0).normal(size=(2, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
    with pytest.raises(ExportMismatchError):
        verify_onnx(model, tmp_path / "m.onnx", batch)


def test_checkpoint_saves_the_resolved_config_and_resumes_past_its_epoch(tiny_run: dict[str, Path]) -> None:
    ckpt = torch.load(tiny_run["lite"].parent / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["image_size"] == 64 and ckpt["config"]["seed"] == 1234
    history = (tiny_run["lite"].parent / "history.jsonl").read_text().splitlines()
    cfg = load_config(
        None, [*TINY, f"data_root={DATA_ROOT}", f"out_dir={tiny_run['lite'].parent}", "epochs=1"]
    )
    train(cfg)  # epoch 1 of 1 is done: resuming trains nothing more
    assert (tiny_run["lite"].parent / "history.jsonl").read_text().splitlines() == history


def test_training_evaluation_and_serving_see_the_same_tensor(
    tiny_run: dict[str, Path], ham_images: list[Path]
) -> None:
    predictor = Predictor(tiny_run["bundle"])
    cfg = load_config(None, TINY)
    split = SplitData([], [])
    split.samples = load_ham10000(DATA_ROOT / "ham10000", 5)[1]["val"].samples
    split.load_pixels()
    model, _, _ = load_checkpoint(tiny_run["lite"])
    train_eval = evaluate(model, split, preprocessing_for(cfg))
    serving = predictor.tensor([Image.open(s.path) for s in split.samples])
    from model_bundle.preprocessing import preprocess

    training_side = np.stack([preprocess(Image.fromarray(px), preprocessing_for(cfg)) for px in split.pixels])
    assert preprocessing_for(cfg) == predictor.manifest.preprocessing
    np.testing.assert_array_equal(training_side, serving)
    assert train_eval["logits"].shape == (5, 7)


def test_folder_layout_loads_classes_and_keeps_lesions_in_one_split(
    tmp_path: Path, ham_images: list[Path]
) -> None:
    for split, names in {"train": ["a__1", "a__2", "b"], "val": ["c"], "test": ["d"]}.items():
        for cls in ("benign", "malignant"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i, name in enumerate(names):
                (folder / f"{name}.jpg").write_bytes(ham_images[i].read_bytes())
    classes, splits = load_folders(tmp_path)
    assert classes == ["benign", "malignant"]
    assert len(splits["train"].samples) == 6 and splits["train"].samples[0].group == "benign/a"
    (tmp_path / "val" / "benign" / "a__9.jpg").write_bytes(ham_images[0].read_bytes())
    with pytest.raises(ValueError, match="appears in both"):
        load_folders(tmp_path)


def test_grouped_kfold_never_splits_a_lesion_and_covers_every_image() -> None:
    _, splits = load_ham10000(DATA_ROOT / "ham10000")
    samples = splits["train"].samples[:600]
    folds = grouped_kfold(samples, 4, seed=0)
    held = [i for _, h in folds for i in h]
    assert sorted(held) == list(range(len(samples)))
    for train_idx, held_idx in folds:
        assert not {samples[i].group for i in train_idx} & {samples[i].group for i in held_idx}


def test_shipped_split_never_mixes_lesions() -> None:
    _, splits = load_ham10000(DATA_ROOT / "ham10000")
    groups = [{s.group for s in splits[name].samples} for name in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert [len(splits[n].samples) for n in ("train", "val", "test")] == [6193, 1311, 1298]


def test_config_yaml_and_overrides_apply_in_order_and_unknown_keys_fail(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("epochs: 3\nlr: 0.01\n")
    cfg = load_config(str(path), ["lr=0.5", "weighted_sampler=true"])
    assert (cfg.epochs, cfg.lr, cfg.weighted_sampler) == (3, 0.5, True)
    with pytest.raises(SystemExit, match="unknown config keys"):
        load_config(None, ["learning_rate=1"])
    assert json.dumps(cfg.to_dict())  # serialisable into checkpoints and bundle.json


@pytest.mark.parametrize("version", ["1.0.0", "2.0.1"])
def test_shipped_bundles_are_valid_and_hash_checked(version: str) -> None:
    shipped = Path(__file__).resolve().parents[2] / "models" / "skintriage-effnet-lite0" / version
    if not (shipped / "bundle.json").exists():
        pytest.fail(f"the shipped bundle models/skintriage-effnet-lite0/{version} is missing")
    manifest = BundleManifest.model_validate_json((shipped / "bundle.json").read_text())
    assert load_manifest(shipped).onnx_sha256 == manifest.onnx_sha256
    assert manifest.format_version == int(version[0])
    size = sum(f.stat().st_size for f in shipped.rglob("*") if f.is_file())
    assert size <= 25_000_000, f"{version} is {size / 1e6:.1f} MB"


def test_kfold_command_trains_one_model_per_grouped_fold_and_writes_a_summary(tmp_path: Path) -> None:
    from training import kfold

    kfold.main(["--folds", "2", *TINY, "limit_per_split=14", f"data_root={DATA_ROOT}", f"out_dir={tmp_path}"])
    summary = json.loads((tmp_path / "kfold.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    assert sum(f["held_out"] for f in summary["folds"]) == 28  # train + val pooled, each image held out once
    assert 0.0 <= summary["mean"] <= 1.0
    assert (tmp_path / "fold0" / "best.pt").is_file() and (tmp_path / "fold1" / "best.pt").is_file()


def test_weighted_sampler_option_trains(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            *TINY,
            "limit_per_split=14",
            "weighted_sampler=true",
            f"data_root={DATA_ROOT}",
            f"out_dir={tmp_path}",
        ],
    )
    assert train(cfg).is_file()
