"""Image-quality measurements sent to the OOD service's quality gate (numpy only, no OpenCV)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from contracts.ood_extra import (
    ANALYSIS_SHORT_SIDE_PX,
    OVEREXPOSED_LUMA_MIN,
    UNDEREXPOSED_LUMA_MAX,
    QualityMeasurements,
)

# ITU-R BT.601 luma weights for R, G, B.
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
_DOMINANT_BAND = 4  # luma levels either side of the histogram's mode


def _analysis_copy(image: Image.Image) -> NDArray[np.float32]:
    """RGB float32 (H, W, 3), shorter side scaled down to ANALYSIS_SHORT_SIDE_PX (never up)."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = ANALYSIS_SHORT_SIDE_PX / min(width, height)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # BOX averages every source pixel, so downscaling does not alias noise into "sharpness".
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.float32)


def laplacian_variance(luma: NDArray[np.float32]) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels (low = blurry)."""
    if luma.shape[0] < 3 or luma.shape[1] < 3:
        return 0.0
    centre = luma[1:-1, 1:-1]
    lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4.0 * centre
    return float(lap.var())


def colourfulness(rgb: NDArray[np.float32]) -> float:
    """Hasler & Suesstrunk (2003) colourfulness: 0 for a grey image, ~>15 for colour photos."""
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = float(np.hypot(rg.std(), yb.std()))
    offset = float(np.hypot(rg.mean(), yb.mean()))
    return spread + 0.3 * offset


def dominant_fraction(luma: NDArray[np.float32]) -> float:
    """Share of pixels within +-4 luma levels of the most common level (1.0 = one flat colour)."""
    levels = np.clip(np.rint(luma), 0, 255).astype(np.int64).ravel()
    histogram = np.bincount(levels, minlength=256)
    mode = int(np.argmax(histogram))
    band = histogram[max(0, mode - _DOMINANT_BAND) : mode + _DOMINANT_BAND + 1]
    return float(band.sum() / levels.size)


def measure_quality(image: Image.Image) -> QualityMeasurements:
    """Size, exposure, blur, contrast and colour measurements of one decoded image."""
    width, height = image.size
    rgb = _analysis_copy(image)
    luma = rgb @ _LUMA
    return QualityMeasurements(
        width=width,
        height=height,
        brightness_mean=float(np.clip(luma.mean(), 0.0, 255.0)),
        underexposed_fraction=float((luma <= UNDEREXPOSED_LUMA_MAX).mean()),
        overexposed_fraction=float((luma >= OVEREXPOSED_LUMA_MIN).mean()),
        laplacian_variance=laplacian_variance(luma),
        contrast_std=float(luma.std()),
        dominant_fraction=dominant_fraction(luma),
        colourfulness=colourfulness(rgb),
    )
