"""`make train`'s 2.0 path at toy scale, on real images: the 2.0 recipe (letterbox, Shades of
Gray, metadata fusion, outlier exposure, EMA, frozen early stages, shift-family augmentation)
-> a format-2 bundle -> fit-ood -> evaluate (fairness) -> eval-shift -> robustness in bundle.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from contracts.bundle import BundleManifest
from model_bundle.loader import load_manifest
from model_bundle.predictor import ClinicalContext, Predictor
from tests.conftest import DATA_ROOT
from training import build_bundle, eval_ood, eval_shift, evaluate, fit_ood
from training.config import load_config
from training.export import load_checkpoint, verify_onnx
from training.ood import OodStats
from training.robustness import write_robustness
from training.train import train

V2 = [
    f"data_root={DATA_ROOT}",
    "limit_per_split=28",
    "epochs=1",
    "batch_size=8",
    "input_width=64",
    "input_height=48",
    "outlier_pool_size=24",
    "outliers_per_batch=2",
    "threads=2",
]
LIMIT = ["--limit-per-split", "28"]


@pytest.fixture(scope="module")
def v2_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("v2")
    cfg = load_config("training/configs/effnet_lite0_v2_lowlr.yaml", [*V2, f"out_dir={root / 'run'}"])
    best = train(cfg)
    names = ["--name", "tiny", "--version", "2.0.0"]
    dirs = ["--out", str(root / "models"), "--staging", str(root / "staging")]
    build_bundle.main(["--candidates", str(best), *names, *dirs])
    bundle = root / "models" / "tiny" / "2.0.0"
    data = ["--data-root", str(DATA_ROOT)]
    fit_ood.main(["--bundle", str(bundle), *data, *LIMIT, "--proxy-images", "8", "--no-cache"])
    eval_ood.main(["--bundle", str(bundle), *data, *LIMIT, "--no-cache"])
    evaluate.main(
        ["--bundle", str(bundle), "--split", "test", *data, *LIMIT, "--cache-dir", str(root / "ita")]
    )
    eval_shift.main(["--bundle", str(bundle), *data, "--limit-per-split", "7"])
    write_robustness(bundle)
    return {"bundle": bundle, "best": best}


def test_the_whole_2_0_path_writes_a_format_2_bundle_that_serving_loads(v2_bundle: dict[str, Path]) -> None:
    manifest = load_manifest(v2_bundle["bundle"])
    assert manifest.format_version == 2 and manifest.version == "2.0.0"
    assert manifest.preprocessing.resize_policy == "letterbox"
    assert manifest.preprocessing.colour_constancy is not None
    assert manifest.io.input_shape == (None, 3, 48, 64) and manifest.io.metadata_input == "metadata"
    assert manifest.metadata is not None and set(manifest.metadata.val_gain) >= {"balanced_accuracy"}
    assert manifest.ood_detector is not None and manifest.robustness is not None
    assert (
        manifest.robustness.worst_shift
        in json.loads((v2_bundle["bundle"] / "metrics_shift.json").read_text())["shifts"]
    )
    for name in (
        "metrics_test.json",
        "metrics_fairness.json",
        "metrics_shift.json",
        "build_info.json",
        "MODEL_CARD.md",
    ):
        assert (v2_bundle["bundle"] / name).is_file(), name
    assert not (v2_bundle["bundle"] / "oe_head.npz").exists()  # moved into ood_stats.npz
    card = (v2_bundle["bundle"] / "MODEL_CARD.md").read_text()
    for heading in (
        "Fairness by skin tone",
        "Robustness to other clinics",
        "Out-of-distribution",
        "whole image",
    ):
        assert heading.lower() in card.lower(), heading
    fairness = json.loads((v2_bundle["bundle"] / "metrics_fairness.json").read_text())
    assert [r["group"] for r in fairness["tables"]["skin tone (ITA)"]]


def test_the_outlier_exposure_head_travels_in_the_ood_statistics(v2_bundle: dict[str, Path]) -> None:
    manifest = load_manifest(v2_bundle["bundle"])
    assert manifest.ood_detector is not None
    stats = OodStats.load(v2_bundle["bundle"] / manifest.ood_detector.stats_file)
    model, _, _ = load_checkpoint(v2_bundle["best"])
    assert stats.oe_weight is not None and model.oe_head is not None
    np.testing.assert_allclose(stats.oe_weight, model.oe_head.weight.detach().numpy().reshape(-1))


def test_served_model_matches_pytorch_with_and_without_metadata(
    v2_bundle: dict[str, Path], ham_images: list[Path]
) -> None:
    predictor = Predictor(v2_bundle["bundle"])
    images = [Image.open(p).convert("RGB") for p in ham_images[:4]]
    context = [ClinicalContext(60, "male", "back"), None, ClinicalContext(sex="female"), None]
    feeds = predictor.feeds(images, context)
    model, _, _ = load_checkpoint(v2_bundle["best"])
    assert verify_onnx(model, v2_bundle["bundle"] / "model.onnx", feeds["image"], feeds["metadata"]) <= 1e-4
    with_meta = predictor.run(images[:1], context[:1])[0].logits
    without = predictor.run(images[:1])[0].logits
    assert not np.allclose(with_meta, without)  # the metadata reaches the logits


def test_a_2_0_manifest_missing_its_new_fields_is_rejected(v2_bundle: dict[str, Path]) -> None:
    body = json.loads((v2_bundle["bundle"] / "bundle.json").read_text())
    BundleManifest.model_validate(body)
    for key in ("metadata", "robustness", "ood_detector"):
        broken = {k: v for k, v in body.items() if k != key}
        with pytest.raises(ValidationError, match=key):
            BundleManifest.model_validate(broken)
    no_cc = json.loads(json.dumps(body))
    del no_cc["preprocessing"]["colour_constancy"]
    with pytest.raises(ValidationError, match="colour_constancy"):
        BundleManifest.model_validate(no_cc)
    as_format_1 = {**body, "format_version": 1}
    with pytest.raises(ValidationError, match="format_version 2"):
        BundleManifest.model_validate(as_format_1)


def test_ood_statistics_refuse_a_different_model(v2_bundle: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(v2_bundle["bundle"], copy)
    model, _, _ = load_checkpoint(v2_bundle["best"])
    with torch.no_grad():
        model.fc.bias.add_(0.5)
    from training.export import export_onnx

    export_onnx(model, (48, 64), copy / "model.onnx")  # a retrained model, same stats beside it
    body = json.loads((copy / "bundle.json").read_text())
    from model_bundle.loader import sha256_file

    body["onnx_sha256"] = sha256_file(copy / "model.onnx")
    with pytest.raises(ValidationError, match="fitted on a different model"):
        BundleManifest.model_validate(body)
    detector, stats, _ = fit_ood.fit_detector(v2_bundle["bundle"], DATA_ROOT, 28, None, proxy_images=8)
    with pytest.raises(ValueError, match="different model"):
        fit_ood.write_detector(copy, detector, stats)
