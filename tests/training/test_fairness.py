"""Skin tone by ITA and the per-subgroup fairness tables of the model card."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageFilter
from skimage.color import lab2rgb, rgb2lab

from tests.conftest import DATA_ROOT
from training.data import load_ham10000
from training.fairness import (
    SKIN_TONE,
    age_band,
    dilate,
    fairness_section_lines,
    fairness_tables,
    image_ita,
    ita_bin,
    split_ita,
    srgb_to_lab,
)

H, W = 60, 80
NO_LESION = np.zeros((H, W), dtype=bool)


def _lab_patch(lightness: float, a: float, b: float, shape: tuple[int, int] = (H, W)) -> NDArray[np.uint8]:
    """A uniform uint8 sRGB image of one L*a*b* colour (skimage's inverse conversion)."""
    rgb = lab2rgb(np.array([[[lightness, a, b]]], dtype=np.float64))[0, 0]
    return np.broadcast_to(np.round(rgb * 255).astype(np.uint8), (*shape, 3)).copy()


def _reference_ita(rgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    lab = rgb2lab(rgb)
    return np.asarray(np.degrees(np.arctan2(lab[..., 0] - 50.0, lab[..., 2])), dtype=np.float64)


def test_lab_conversion_matches_skimage_on_random_colours() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    assert np.abs(srgb_to_lab(rgb) - rgb2lab(rgb)).max() < 0.05


def test_dilation_matches_a_pil_max_filter() -> None:
    mask = np.random.default_rng(1).random((H, W)) > 0.97
    mask[0, 0] = mask[-1, -1] = True  # corners: the border is handled like PIL's
    reference = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(7))) > 0
    np.testing.assert_array_equal(dilate(mask, 7), reference)


@pytest.mark.parametrize(
    ("lab", "expected"),
    [
        ((80.0, 12.0, 12.0), "very light"),  # ITA 68.2
        ((65.0, 14.0, 14.0), "light"),  # ITA 47.0
        ((60.0, 14.0, 14.0), "intermediate"),  # ITA 35.5
        ((55.0, 15.0, 20.0), "tan"),  # ITA 14.0
        ((40.0, 15.0, 20.0), "brown and dark"),  # ITA -26.6
    ],
)
def test_uniform_skin_of_known_lab_lands_in_its_bin(lab: tuple[float, float, float], expected: str) -> None:
    ita = image_ita(_lab_patch(*lab), NO_LESION)
    exact = math.degrees(math.atan2(lab[0] - 50.0, lab[2]))
    assert ita == pytest.approx(exact, abs=1.5)
    assert ita_bin(ita) == expected


def _colours_near(target: float) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Skin-like uint8 colours whose reference ITA is just below / just above `target`."""
    grid = (
        np.stack(
            np.meshgrid(np.arange(110, 256, 3), np.arange(60, 236, 3), np.arange(40, 226, 3), indexing="ij"),
            -1,
        )
        .reshape(-1, 1, 3)
        .astype(np.uint8)
    )
    ita = _reference_ita(grid)[:, 0]
    below = grid[(ita > target - 0.15) & (ita < target - 0.05)]
    above = grid[(ita > target + 0.05) & (ita < target + 0.15)]
    assert len(below) and len(above), f"no grid colour near ITA {target}"
    return below[0, 0], above[0, 0]


@pytest.mark.parametrize(
    ("boundary", "darker", "lighter"),
    [(55.0, "light", "very light"), (41.0, "intermediate", "light"), (28.0, "tan", "intermediate"),
     (10.0, "brown and dark", "tan")],
)  # fmt: skip
def test_images_either_side_of_a_bin_boundary_land_in_different_bins(
    boundary: float, darker: str, lighter: str
) -> None:
    below, above = _colours_near(boundary)
    assert ita_bin(image_ita(np.broadcast_to(below, (H, W, 3)).copy(), NO_LESION)) == darker
    assert ita_bin(image_ita(np.broadcast_to(above, (H, W, 3)).copy(), NO_LESION)) == lighter


def test_a_boundary_value_belongs_to_the_darker_bin() -> None:
    assert [ita_bin(v) for v in (55.1, 55.0, 54.9, 41.0, 28.0, 10.0, -60.0)] == [
        "very light",
        "light",
        "light",
        "intermediate",
        "tan",
        "brown and dark",
        "brown and dark",
    ]


def test_dark_lesion_is_excluded_from_the_skin_median() -> None:
    rgb = _lab_patch(80.0, 10.0, 12.0)  # ITA 68: very light skin
    lesion = np.zeros((H, W), dtype=bool)
    lesion[5:55, 5:60] = True  # 57% of the image, so it would dominate an unmasked median
    rgb[lesion] = _lab_patch(30.0, 15.0, 20.0, (1, 1))[0, 0]  # ITA -45
    assert ita_bin(image_ita(rgb, lesion)) == "very light"
    assert ita_bin(image_ita(rgb, NO_LESION)) == "brown and dark"


def test_black_vignette_is_not_counted_as_skin() -> None:
    rgb = _lab_patch(75.0, 10.0, 12.0)
    rgb[:, : W * 6 // 10] = 0  # the scope's unlit ring covers 60% of the frame
    assert ita_bin(image_ita(rgb, NO_LESION)) == "very light"


def test_mask_covering_the_whole_image_gives_unknown() -> None:
    ita = image_ita(_lab_patch(70.0, 10.0, 12.0), np.ones((H, W), dtype=bool))
    assert math.isnan(ita)
    assert ita_bin(ita) == "unknown"


def test_pink_skin_with_negative_b_is_very_light_not_dark() -> None:
    ita = image_ita(_lab_patch(70.0, 25.0, -5.0), NO_LESION)
    assert ita == 90.0
    assert ita_bin(ita) == "very light"


def _hand_made() -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.bool_], dict[str, list[str]]]:
    """25 'light' images (3 melanomas, 2 of them urgent; 20 of 25 correct at confidence 0.9; 5
    rejected) and 5 'tan' images (all correct)."""

    def row(top: int) -> list[float]:
        return [0.9 if c == top else 0.1 / 6 for c in range(7)]

    labels = [4, 4, 4] + [5] * 22 + [5] * 5
    tops = [4, 4, 5] + [5] * 18 + [2] * 4 + [5] * 5
    rejected = [True] * 5 + [False] * 25
    groups = {
        SKIN_TONE: ["light"] * 25 + ["tan"] * 5,
        "sex": ["unknown"] * 2 + ["male"] * 25 + ["female"] * 3,
    }
    return np.array([row(t) for t in tops]), np.array(labels), np.array(rejected), groups


def test_fairness_tables_compute_the_hand_made_example() -> None:
    probs, labels, rejected, groups = _hand_made()
    tables = fairness_tables(probs, labels, [0, 1, 4], 0.5, rejected, groups)
    light, tan = tables[SKIN_TONE]
    assert (light["group"], light["n"], light["n_malignant"], light["small"]) == ("light", 25, 3, False)
    assert light["urgent_sensitivity"] == pytest.approx(2 / 3)
    assert light["accuracy"] == pytest.approx(0.8)
    assert light["balanced_accuracy"] == pytest.approx((2 / 3 + 18 / 22) / 2)
    assert light["ece"] == pytest.approx(0.1)
    assert light["ood_rejected"] == pytest.approx(0.2)
    assert (tan["group"], tan["n"], tan["n_malignant"], tan["small"]) == ("tan", 5, 0, True)
    assert math.isnan(tan["urgent_sensitivity"])
    assert tan["accuracy"] == 1.0


def test_skin_tone_rows_follow_bin_order_and_others_size_with_unknown_last() -> None:
    probs, labels, rejected, _ = _hand_made()
    groups = {
        SKIN_TONE: ["unknown"] + ["tan"] * 20 + ["very light"] * 2 + ["light"] * 7,
        "sex": ["unknown"] * 20 + ["female"] * 4 + ["male"] * 6,
    }
    tables = fairness_tables(probs, labels, [0, 1, 4], 0.5, rejected, groups)
    assert [r["group"] for r in tables[SKIN_TONE]] == ["very light", "light", "tan", "unknown"]
    assert [r["group"] for r in tables["sex"]] == ["male", "female", "unknown"]


def test_card_shows_small_groups_with_counts_only() -> None:
    probs, labels, rejected, groups = _hand_made()
    lines = fairness_section_lines(fairness_tables(probs, labels, [0, 1, 4], 0.5, rejected, groups))
    text = "\n".join(lines)
    assert lines[0] == "## Fairness by skin tone and subgroup"
    assert "Fitzpatrick" in text and "### By skin tone (ITA)" in text and "### By sex" in text
    assert "| light | 25 | 3 | 0.667 | 0.742 | 0.100 | 0.200 |" in lines
    assert "| tan | 5 | 0 | n<20 | n<20 | n<20 | n<20 |" in lines


def test_age_bands_agree_with_the_model_card() -> None:
    from training.model_card import _age_band

    for raw in ("", "0.0", "5.0", "29.9", "30.0", "44.0", "45.0", "59.0", "60.0", "74.0", "75.0", "85.0"):
        assert age_band(raw) == _age_band(raw)


def test_real_ham_images_have_finite_ita_and_are_cached(tmp_path: Path) -> None:
    samples = load_ham10000(DATA_ROOT / "ham10000", 5)[1]["test"].samples
    ita = split_ita(samples, DATA_ROOT, cache_dir=tmp_path)
    assert ita.shape == (5,)
    assert np.isfinite(ita).all() and (np.abs(ita) <= 90).all()
    assert len(list(tmp_path.glob("ita-*.npz"))) == 1
    np.testing.assert_array_equal(split_ita(samples, DATA_ROOT, cache_dir=tmp_path), ita)
