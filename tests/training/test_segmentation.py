"""model_bundle.segmentation on synthetic dermoscopy-like images with known lesions: the area and
the Dice against the truth, the central component chosen over an off-centre one, holes filled."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from model_bundle.segmentation import (
    GROW_SIZE,
    WORK_SIDE,
    components,
    dice,
    fill_holes,
    otsu_threshold,
    resize_mask,
    segment_lesion,
)

SKIN = (205, 160, 140)
LESION = (95, 60, 45)


def disc(width: int, height: int, cx: float, cy: float, radius: float) -> NDArray[np.bool_]:
    ys, xs = np.mgrid[0:height, 0:width]
    inside: NDArray[np.bool_] = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
    return inside


def picture(mask: NDArray[np.bool_], seed: int = 0) -> Image.Image:
    """Skin with a brown lesion where `mask` is, plus a little sensor noise."""
    rng = np.random.default_rng(seed)
    pixels = np.where(mask[..., None], np.asarray(LESION, float), np.asarray(SKIN, float))
    pixels = pixels + rng.normal(0.0, 6.0, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


# The final dilation widens the lesion by GROW_SIZE // 2 working pixels (HAM10000's masks draw the
# border generously): in pixels of a 200 px wide image, that many times 200 / WORK_SIDE.
GROWTH_PX = (GROW_SIZE // 2) * 200 / WORK_SIDE


@pytest.mark.parametrize("radius", [25.0, 40.0, 55.0])
def test_a_centred_disc_is_found_whole_with_its_area_and_a_high_dice(radius: float) -> None:
    truth = disc(200, 150, 100, 75, radius)

    result = segment_lesion(picture(truth))

    predicted = resize_mask(result.mask, (200, 150))
    assert dice(predicted, truth) > 0.8
    assert (predicted & truth).sum() / truth.sum() > 0.98  # all of the lesion is inside
    grown = disc(200, 150, 100, 75, radius + GROWTH_PX)
    assert result.area_fraction == pytest.approx(grown.mean(), rel=0.1)
    assert dice(predicted, grown) > 0.95


def test_a_bigger_lesion_has_a_bigger_area() -> None:
    small = segment_lesion(picture(disc(200, 150, 100, 75, 25))).area_fraction
    large = segment_lesion(picture(disc(200, 150, 100, 75, 50))).area_fraction

    assert large / small == pytest.approx(4.0, rel=0.3)


def test_the_central_lesion_is_chosen_over_a_dark_corner() -> None:
    lesion = disc(200, 150, 100, 75, 30)
    corner = disc(200, 150, 0, 0, 35)

    result = segment_lesion(picture(lesion | corner))

    predicted = resize_mask(result.mask, (200, 150))
    assert dice(predicted, lesion) > 0.85
    assert not predicted[:10, :10].any()


def test_an_image_without_a_lesion_gives_an_area_below_one() -> None:
    result = segment_lesion(picture(np.zeros((150, 200), dtype=bool)))

    assert 0.0 <= result.area_fraction < 1.0


def test_holes_inside_a_region_are_filled_but_the_outside_is_not() -> None:
    ring = disc(40, 40, 20, 20, 15) & ~disc(40, 40, 20, 20, 5)

    filled = fill_holes(ring)

    assert filled[20, 20] and not filled[0, 0]
    assert filled.sum() == disc(40, 40, 20, 20, 15).sum()


def test_components_are_separated() -> None:
    mask = disc(60, 40, 10, 10, 5) | disc(60, 40, 45, 25, 8)

    found = components(mask)

    assert len(found) == 2
    assert sum(int(c.sum()) for c in found) == int(mask.sum())


def test_otsu_splits_two_clusters() -> None:
    values = np.concatenate([np.full(100, 0.2), np.full(100, 0.8)])

    assert 0.2 < otsu_threshold(values) <= 0.8


def test_dice_of_identical_masks_is_one_and_of_disjoint_masks_zero() -> None:
    a = disc(20, 20, 5, 5, 3)
    b = disc(20, 20, 15, 15, 3)

    assert dice(a, a) == 1.0
    assert dice(a, b) == 0.0
