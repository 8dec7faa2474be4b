"""The quality gate on measurements of generated and real images (measured as the worker does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from contracts.ood_extra import QualityMeasurements
from services.inference.domain.quality import measure_quality
from services.ood.domain.decision import QualityThresholds, quality_reasons

LIMITS = QualityThresholds()


def _reasons(image: Image.Image) -> list[str]:
    return quality_reasons(measure_quality(image), LIMITS)


def _ham(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def test_real_ham10000_images_pass_the_quality_gate(ham_images: list[Path]) -> None:
    failing = {path.name: _reasons(_ham(path)) for path in ham_images}

    assert {name: reasons for name, reasons in failing.items() if reasons} == {}


def test_flat_grey_image_is_uniform() -> None:
    reasons = _reasons(Image.new("RGB", (600, 450), (128, 128, 128)))

    assert "uniform" in reasons


def test_mostly_uniform_image_with_a_small_spot_is_uniform() -> None:
    image = Image.new("RGB", (600, 450), (200, 170, 150))
    image.paste((90, 60, 40), (280, 210, 310, 240))

    assert "uniform" in _reasons(image)


def test_heavily_blurred_image_is_too_blurry(ham_images: list[Path]) -> None:
    blurred = _ham(ham_images[0]).resize((800, 600)).filter(ImageFilter.GaussianBlur(radius=20))

    assert "too_blurry" in _reasons(blurred)


def test_dark_image_is_too_dark(ham_images: list[Path]) -> None:
    dark = ImageEnhance.Brightness(_ham(ham_images[1])).enhance(0.12)

    assert _reasons(dark) == ["too_dark"]


def test_blown_out_image_is_overexposed(ham_images: list[Path]) -> None:
    bright = ImageEnhance.Brightness(_ham(ham_images[2])).enhance(3.0)

    assert "overexposed" in _reasons(bright)


def test_thumbnail_is_too_small(ham_images: list[Path]) -> None:
    assert _reasons(_ham(ham_images[3]).resize((64, 48))) == ["too_small"]


def test_grayscale_image_is_flagged_grayscale(ham_images: list[Path]) -> None:
    grey = _ham(ham_images[4]).convert("L").convert("RGB")

    assert _reasons(grey) == ["grayscale"]


def test_random_noise_is_sharp_and_not_uniform() -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))

    measured = measure_quality(noise)

    assert measured.laplacian_variance > 1000
    assert measured.dominant_fraction < 0.2


def test_measurements_round_trip_through_the_wire_dict(ham_images: list[Path]) -> None:
    measured = measure_quality(_ham(ham_images[0]))

    assert QualityMeasurements.model_validate(measured.to_wire()) == measured


@pytest.mark.parametrize("size", [(150, 200), (200, 150), (1024, 768)])
def test_size_is_that_of_the_image_not_the_analysis_copy(size: tuple[int, int]) -> None:
    measured = measure_quality(Image.new("RGB", size, (120, 90, 80)))

    assert (measured.width, measured.height) == size
