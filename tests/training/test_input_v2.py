"""Format-2 input: letterbox geometry, Shades of Gray colour constancy, clinical metadata encoding,
heatmap placement, and the training views that feed them (augmentation, generated outliers)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contracts.bundle import ColourConstancy, Preprocessing
from model_bundle.heatmap import heatmap_png
from model_bundle.metadata import encode_metadata, missing_metadata, normalise_site
from model_bundle.preprocessing import placement, preprocess, shades_of_gray
from training import augment
from training.config import load_config
from training.data import metadata_encoding
from training.models import LiteClassifier, early_modules
from training.outliers import outlier_pool
from training.train import augment_config_for, evaluate, preprocessing_for

LETTERBOX = Preprocessing(
    resize_policy="letterbox",
    input_width=64,
    input_height=48,
    orient_landscape=True,
    colour_constancy=ColourConstancy(power=6),
    scale=1 / 255,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(60, 200, (height, width, 3), dtype=np.uint8))


def test_letterbox_keeps_the_whole_image_and_pads_the_rest() -> None:
    # A square image in a 4:3 canvas: 48x48 content in the middle, padding left and right.
    tensor = preprocess(_image(120, 120), LETTERBOX)
    assert tensor.shape == (3, 48, 64)
    assert np.all(tensor[:, :, :8] == LETTERBOX.pad_value) and np.all(
        tensor[:, :, -8:] == LETTERBOX.pad_value
    )
    assert not np.all(tensor[:, :, 8:56] == LETTERBOX.pad_value)
    # A 4:3 image fills the canvas exactly: no padding at all.
    full = preprocess(_image(200, 150), LETTERBOX)
    assert not np.any(np.all(full == LETTERBOX.pad_value, axis=(0, 1)))


def test_portrait_images_are_turned_landscape_not_shrunk() -> None:
    portrait = _image(150, 200)
    turned = preprocess(portrait, LETTERBOX)
    landscape = preprocess(portrait.transpose(Image.Transpose.ROTATE_270), LETTERBOX)
    np.testing.assert_array_equal(turned, landscape)
    assert placement(150, 200, LETTERBOX).rotated and not placement(200, 150, LETTERBOX).rotated


def test_shades_of_gray_removes_a_colour_cast() -> None:
    rng = np.random.default_rng(1)
    skin = np.clip(rng.normal([180, 140, 120], 12, (60, 80, 3)), 0, 255).astype(np.uint8)
    cast = np.clip(skin * np.array([1.2, 1.0, 0.75]), 0, 255).astype(np.uint8)
    spec = ColourConstancy(power=6)
    a, b = shades_of_gray(skin, spec), shades_of_gray(cast, spec)
    ratio_before = cast[..., 0].mean() / cast[..., 2].mean() - skin[..., 0].mean() / skin[..., 2].mean()
    ratio_after = b[..., 0].mean() / b[..., 2].mean() - a[..., 0].mean() / a[..., 2].mean()
    assert abs(ratio_after) < 0.1 * abs(ratio_before)
    # The illuminant becomes neutral: the channels' 6-norm means are equal after correction.
    norms = (np.mean((b / 255.0) ** 6, axis=(0, 1))) ** (1 / 6)
    assert norms.max() - norms.min() < 0.02


def test_colour_constancy_gives_the_identical_tensor_in_training_evaluation_and_serving(
    ham_images: list[Path],
) -> None:
    from model_bundle.predictor import Predictor  # noqa: F401  # serving's path is preprocess()
    from training.data import SplitData

    cfg = load_config("training/configs/effnet_lite0_v2.yaml", ["input_width=64", "input_height=48"])
    spec = preprocessing_for(cfg)
    assert spec.colour_constancy is not None and spec.resize_policy == "letterbox"
    pixels = [np.asarray(Image.open(p).convert("RGB")) for p in ham_images[:3]]
    training_side = np.stack([preprocess(Image.fromarray(px), spec) for px in pixels])
    serving_side = np.stack([preprocess(Image.open(p), spec) for p in ham_images[:3]])
    np.testing.assert_array_equal(training_side, serving_side)
    # training.train.evaluate feeds exactly these tensors to the network.
    model = LiteClassifier(7, 64, pretrained=False, dropout=0.0, metadata_dim=0)
    split = SplitData([], pixels)
    split.samples = [None] * 3  # type: ignore[list-item]  # evaluate only counts samples
    out = evaluate(model, split, spec)
    with torch.inference_mode():
        direct = model.eval()(torch.from_numpy(serving_side))[0].numpy()
    np.testing.assert_allclose(out["logits"], direct, atol=1e-5)


def test_metadata_encoding_marks_every_missing_field_and_ignores_unknown_values() -> None:
    spec = metadata_encoding()
    none = missing_metadata(spec)
    assert none.shape == (spec.dim,) and none.sum() == 3.0  # the three missing flags
    full = encode_metadata(spec, 54, "Female", "Lower Extremity")
    assert full[0] == pytest.approx(0.54) and full[1] == 0
    assert full.sum() == pytest.approx(0.54 + 2)  # one sex and one site one-hot
    np.testing.assert_array_equal(encode_metadata(spec, None, "robot", "elbow-pit"), none)
    assert normalise_site("upper_extremity", spec) == "upper extremity"
    assert normalise_site("Leg", spec) == "lower extremity"  # an alias
    assert normalise_site("", spec) is None


def test_metadata_fusion_runs_with_every_field_missing_and_uses_fields_when_given() -> None:
    spec = metadata_encoding()
    torch.manual_seed(0)
    model = LiteClassifier(7, 64, pretrained=False, dropout=0.0, metadata_dim=spec.dim).eval()
    x = torch.zeros(2, 3, 48, 64)
    missing = torch.from_numpy(np.stack([missing_metadata(spec)] * 2))
    given = torch.from_numpy(np.stack([encode_metadata(spec, 70, "male", "face")] * 2))
    with torch.inference_mode():
        bare, with_meta = model(x, missing)[0], model(x, given)[0]
    assert torch.isfinite(bare).all() and not torch.allclose(bare, with_meta)
    with pytest.raises(ValueError, match="metadata"):
        model(x, None)


def test_freezing_early_stages_keeps_the_stride_4_blocks_only() -> None:
    model = LiteClassifier(7, 64, pretrained=False, dropout=0.0)
    blocks = [m for m in early_modules(model.backbone) if hasattr(m, "_block_args")]
    assert blocks and all(b._block_args.output_filters <= 24 for b in blocks)
    assert len(blocks) < len(model.backbone._blocks)


@pytest.mark.parametrize(("width", "height"), [(200, 150), (150, 200), (120, 120)])
def test_heatmap_maps_the_input_corner_back_onto_the_image(width: int, height: int) -> None:
    cam = np.zeros((6, 8), dtype=np.float32)
    cam[0, 0] = 1.0  # hot at the top-left of the model's input
    png = heatmap_png(cam, width, height, LETTERBOX.input_hw, placement(width, height, LETTERBOX))
    overlay = np.asarray(Image.open(io.BytesIO(png)))
    assert overlay.shape == (height, width, 4)
    ys, xs = np.nonzero(overlay[..., 0] > 200)
    if width == height:
        # The letterbox padding is left of the square content: the hot corner is the image's.
        assert ys.mean() < height * 0.2 and xs.mean() < width * 0.2
    elif height > width:
        # Turned 90 degrees clockwise: the input's top-left is the image's bottom-left.
        assert ys.mean() > height * 0.8 and xs.mean() < width * 0.2
    else:
        assert ys.mean() < height * 0.2 and xs.mean() < width * 0.2
    assert overlay[..., 3].min() > 0  # the whole image is covered (no centre-crop gaps)


def test_augmentation_is_deterministic_for_a_seed_and_covers_the_shift_families() -> None:
    rgb = np.asarray(_image(200, 150, seed=3))
    cfg = augment_config_for(load_config("training/configs/effnet_lite0_v2.yaml"))
    assert cfg.shift_families
    a = augment.augment(rgb, LETTERBOX, cfg, np.random.default_rng(7))
    b = augment.augment(rgb, LETTERBOX, cfg, np.random.default_rng(7))
    c = augment.augment(rgb, LETTERBOX, cfg, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 48, 64) and not np.array_equal(a, c)
    rng = np.random.default_rng(0)
    flat = np.full((150, 200, 3), 200, dtype=np.uint8)
    assert augment.vignette(flat, 0.6, 0.5, rng)[0, 0].mean() < 150  # darker corners
    assert augment.dark_ring(flat, 0.8, rng)[0, 0].max() == 0
    assert (augment.hair(flat, 5, rng).min(axis=2) < 100).any()
    zoomed = augment.zoom_out(np.asarray(_image(200, 150)), 0.5, rng)
    assert zoomed.shape == (150, 200, 3)
    assert augment.squash(flat, 0.75).shape == (150, 150, 3)


def test_outlier_pool_is_deterministic_and_never_reads_the_measurement_sets() -> None:
    first, again = outlier_pool(12, seed=5), outlier_pool(12, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in first)
    import ast

    tree = ast.parse(Path("training/outliers.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in getattr(node, "names", [])
    } | {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "skimage" not in imported and "training" not in imported  # no data loaders, no eval sets
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not names & {"DATA_ROOT", "DEFAULT_DATA_ROOT"}
