"""The shift benchmark: each transform is deterministic and changes what it claims to change, and
eval_shift runs end to end on the tiny bundle with a few real HAM10000 images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from tests.conftest import DATA_ROOT
from training import eval_shift, shift
from training.robustness import robustness_of
from training.shift import SHIFT_INFO, SHIFTS, image_seed

HAM = DATA_ROOT / "ham10000"
IMAGE_ID = "ISIC_0024306"  # a nevus with a central lesion and plenty of skin around it
SKIN = (205, 150, 135)

RGB = NDArray[np.uint8]
Mask = NDArray[np.bool_]


@pytest.fixture(scope="module")
def ham() -> tuple[RGB, Mask, int]:
    """One real image, its lesion mask and its seed."""
    with Image.open(HAM / "images" / f"{IMAGE_ID}.jpg") as img:
        rgb = np.asarray(img.convert("RGB"))
    with Image.open(HAM / "masks" / f"{IMAGE_ID}.png") as img:
        mask = np.asarray(img.convert("L")) > 127
    return rgb, mask, image_seed(IMAGE_ID)


def flat_skin(height: int = 150, width: int = 200) -> RGB:
    """A synthetic, perfectly flat patch of bright skin."""
    return np.broadcast_to(np.asarray(SKIN, dtype=np.uint8), (height, width, 3)).copy()


def luma(rgb: RGB) -> NDArray[np.float64]:
    return rgb.astype(np.float64) @ np.asarray([0.299, 0.587, 0.114])


def laplacian_variance(rgb: RGB) -> float:
    y = luma(rgb)
    return float((y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]).var())


def high_frequency_energy(rgb: RGB) -> float:
    """Share of the luma spectrum's energy above a quarter of the Nyquist frequency."""
    spectrum = np.abs(np.fft.fft2(luma(rgb) - luma(rgb).mean())) ** 2
    fy = np.abs(np.fft.fftfreq(rgb.shape[0]))[:, None]
    fx = np.abs(np.fft.fftfreq(rgb.shape[1]))[None, :]
    return float(spectrum[np.maximum(fy, fx) > 0.125].sum() / spectrum.sum())


def red_blue_ratio(rgb: RGB) -> float:
    return float(rgb[..., 0].astype(np.float64).mean() / rgb[..., 2].astype(np.float64).mean())


def test_shifts_are_listed_in_order_with_a_description_each() -> None:
    assert list(SHIFTS) == [
        "identity",
        "squash_square",
        "zoom_out",
        "square_frame_zoom_out",
        "warm_cast",
        "cool_cast",
        "green_tint",
        "dermatoscope",
        "jpeg_downscale",
        "blur",
        "hair",
    ]
    assert set(SHIFT_INFO) == set(SHIFTS)
    assert all(info.mimics and info.parameters for info in SHIFT_INFO.values())


def test_image_seed_is_a_stable_hash_of_the_id() -> None:
    assert image_seed(IMAGE_ID) == image_seed(IMAGE_ID) == 9_821_349
    assert image_seed(IMAGE_ID) != image_seed("ISIC_0024307")


@pytest.mark.parametrize("name", list(SHIFTS))
def test_every_shift_is_deterministic_and_leaves_its_input_alone(
    name: str, ham: tuple[RGB, Mask, int]
) -> None:
    rgb, mask, seed = ham
    before = rgb.copy(), mask.copy()
    first, second = SHIFTS[name](rgb, mask, seed), SHIFTS[name](rgb, mask, seed)
    assert first[0].tobytes() == second[0].tobytes()
    assert first[1].tobytes() == second[1].tobytes()
    assert first[0].dtype == np.uint8 and first[0].ndim == 3 and first[0].shape[2] == 3
    assert first[1].dtype == bool and first[1].shape == first[0].shape[:2]
    assert np.array_equal(rgb, before[0]) and np.array_equal(mask, before[1])


def test_hair_differs_for_a_different_seed(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    assert not np.array_equal(shift.hair(rgb, mask, seed)[0], shift.hair(rgb, mask, seed + 1)[0])


def test_identity_returns_the_input_unchanged(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    out, out_mask = shift.identity(rgb, mask, seed)
    assert np.array_equal(out, rgb) and np.array_equal(out_mask, mask)


def test_zoom_out_shrinks_the_lesion_to_about_0_36_of_its_area(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    out, out_mask = shift.zoom_out(rgb, mask, seed)
    assert out.shape == rgb.shape
    assert out_mask.sum() / mask.sum() == pytest.approx(0.36, abs=0.02)


def test_zoom_out_border_is_skin_coloured(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    out, _ = shift.zoom_out(rgb, mask, seed)
    skin = shift.skin_colour(rgb, mask)
    border = np.concatenate([out[:8].reshape(-1, 3), out[-8:].reshape(-1, 3)]).astype(np.float64)
    assert np.abs(border.mean(axis=0) - skin).max() < 6.0


def test_skin_colour_falls_back_to_the_border_when_the_lesion_fills_the_frame() -> None:
    rgb = flat_skin()
    rgb[10:-10, 10:-10] = (60, 30, 20)
    full = np.ones(rgb.shape[:2], dtype=bool)
    assert shift.skin_colour(rgb, full) == pytest.approx(SKIN)


def test_square_frame_zoom_out_outputs_a_max_side_square_with_a_smaller_lesion(
    ham: tuple[RGB, Mask, int],
) -> None:
    rgb, mask, seed = ham
    out, out_mask = shift.square_frame_zoom_out(rgb, mask, seed)
    assert out.shape == (200, 200, 3)
    assert out_mask.mean() < 0.45 * mask.mean()


def test_squash_square_outputs_a_min_side_square(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    out, out_mask = shift.squash_square(rgb, mask, seed)
    assert out.shape == (150, 150, 3) and out_mask.shape == (150, 150)
    assert out_mask.mean() == pytest.approx(mask.mean(), abs=0.01)


def test_warm_cast_raises_and_cool_cast_lowers_the_red_blue_ratio(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    ratio = red_blue_ratio(rgb)
    assert red_blue_ratio(shift.warm_cast(rgb, mask, seed)[0]) > 1.2 * ratio
    assert red_blue_ratio(shift.cool_cast(rgb, mask, seed)[0]) < 0.8 * ratio


def test_green_tint_raises_green_relative_to_red_and_blue(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    out = shift.green_tint(rgb, mask, seed)[0].astype(np.float64)
    src = rgb.astype(np.float64)
    assert out[..., 1].mean() / out[..., 0].mean() > 1.15 * src[..., 1].mean() / src[..., 0].mean()


def test_dermatoscope_darkens_the_corners_far_more_than_the_centre() -> None:
    rgb = flat_skin()
    out, _ = shift.dermatoscope(rgb, np.zeros(rgb.shape[:2], dtype=bool), 0)
    y = luma(out)
    corners = np.mean([y[:6, :6].mean(), y[:6, -6:].mean(), y[-6:, :6].mean(), y[-6:, -6:].mean()])
    centre = y[65:85, 90:110].mean()
    assert corners / centre < 0.5  # the input's ratio is 1.0
    assert out[0, 0].max() == 0  # outside the contact plate's ring
    assert centre > 0.6 * luma(rgb).mean()


def test_blur_lowers_the_laplacian_variance(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    assert laplacian_variance(shift.blur(rgb, mask, seed)[0]) < 0.3 * laplacian_variance(rgb)


def test_jpeg_downscale_lowers_high_frequency_energy(ham: tuple[RGB, Mask, int]) -> None:
    rgb, mask, seed = ham
    out, out_mask = shift.jpeg_downscale(rgb, mask, seed)
    assert out.shape == rgb.shape and np.array_equal(out_mask, mask)
    assert high_frequency_energy(out) < 0.5 * high_frequency_energy(rgb)


def test_hair_adds_thin_dark_strands_to_bright_skin() -> None:
    rgb = flat_skin()
    out, _ = shift.hair(rgb, np.zeros(rgb.shape[:2], dtype=bool), image_seed(IMAGE_ID))
    dark = luma(out) < 80
    assert 0.005 < dark.mean() < 0.15
    assert np.array_equal(out[~dark], rgb[~dark])  # nothing but the strands changed
    # thin: no 5x5 block is entirely hair (strands are 1-2 px wide)
    blocks = np.lib.stride_tricks.sliding_window_view(dark, (5, 5)).all(axis=(2, 3))
    assert not blocks.any()


def test_eval_shift_end_to_end_on_the_tiny_bundle(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "shift.json"
    args = ["--bundle", str(tiny_bundle_dir), "--data-root", str(DATA_ROOT), "--limit-per-split", "7"]
    eval_shift.main([*args, "--out", str(out)])
    metrics = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert not (tiny_bundle_dir / "metrics_shift.json").exists()
    assert metrics["bundle"] == "tiny-test/0.0.1" and metrics["split"] == "test" and metrics["n"] == 7
    assert list(metrics["shifts"]) == list(SHIFTS)
    keys = (
        "mel_nv_auc",
        "mel_nv_auc_pmal",
        "balanced_accuracy",
        "accuracy",
        "urgent_sensitivity",
        "urgent_specificity",
        "melanoma_sensitivity",
        "ood_acceptance",
    )
    for m in metrics["shifts"].values():
        assert m["n"] == 7
        for key in keys:
            assert m[key] is None or 0.0 <= m[key] <= 1.0, key
    # round-robin over the classes keeps one mel and one nv, so the AUC is defined
    assert metrics["shifts"]["identity"]["mel_nv_auc"] is not None
    worst = metrics["worst_shift"]
    assert worst["name"] in set(SHIFTS) - {"identity"}
    assert worst["mel_nv_auc"] == min(
        m["mel_nv_auc"] for n, m in metrics["shifts"].items() if n != "identity"
    )
    assert worst["urgent_sensitivity"] == metrics["shifts"][worst["name"]]["urgent_sensitivity"]
    assert metrics["worst_urgent_sensitivity"] == min(
        m["urgent_sensitivity"] for n, m in metrics["shifts"].items() if n != "identity"
    )
    lines = eval_shift.robustness_section_lines(metrics)
    assert lines[0] == "## Robustness to other clinics' images (shift benchmark)"
    shift_rows = [
        line for line in lines if line.startswith("| ") and "target" not in line and "goal" not in line
    ]
    target_rows = [
        line for line in lines if line.startswith(("| melanoma-vs-nevus AUC", "| urgent sensitivity"))
    ]
    assert len(shift_rows) - len(target_rows) == 1 + len(SHIFTS)  # the header + one row per shift
    assert len(target_rows) == 2 and all(line.endswith(("| yes |", "| no |")) for line in target_rows)
    assert any(f"**`{worst['name']}`**" in line for line in lines)


def test_eval_shift_writes_into_the_bundle_without_out(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for path in tiny_bundle_dir.iterdir():
        (bundle / path.name).write_bytes(path.read_bytes())
    eval_shift.main(["--bundle", str(bundle), "--data-root", str(DATA_ROOT), "--limit-per-split", "7"])
    metrics = json.loads((bundle / "metrics_shift.json").read_text())
    assert metrics["n"] == 7
    assert (bundle / "plots" / "shift_robustness.png").is_file()
    # the headline is what training/robustness.py copies into bundle.json
    (bundle / "metrics_fairness.json").write_text("{}")
    robustness = robustness_of(bundle)
    assert robustness.worst_shift == metrics["worst_shift"]["name"]
    assert robustness.worst_shift_mel_nv_auc == metrics["worst_shift"]["mel_nv_auc"]
