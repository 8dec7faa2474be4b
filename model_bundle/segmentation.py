"""Classical lesion segmentation of a dermoscopic image (numpy + Pillow only, so the worker needs
no scipy, scikit-image or torch): the lesion's share of the image, for tracking its size over time.

The method, chosen on HAM10000 `val` and measured on `test` against the dataset's lesion masks
(Dice in the model card, `make calibrate-change`):
1. work at a small fixed size (the long side `WORK_SIDE` px), which also smooths hair and noise;
2. shades-of-grey colour constancy (Minkowski p=6), so the skin's tint does not shift the score;
3. a lesion score per pixel: darkness plus saturation (pigmented lesions are darker and more
   saturated than the skin around them), blurred;
4. Otsu's threshold on the score of the pixels inside the dermoscope's field of view (the black
   corners of a round dermoscope would otherwise pull the threshold down);
5. morphological opening and closing (Pillow's min/max filters), hole filling;
6. of the connected components, the one with the largest area weighted by closeness to the centre
   (the photographer centres the lesion; dark corners and hairs lie off centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

# Long side of the working image, in pixels: HAM10000's images are 200 px wide.
WORK_SIDE = 160
# Pixels this dark (mean of RGB, 0..255) are outside the dermoscope's field of view.
VIGNETTE_LEVEL = 20.0
# Minkowski norm of the shades-of-grey colour constancy (Finlayson & Trezzi 2004: p=6 works best).
SHADES_OF_GREY_P = 6.0
# Weight of the saturation term in the lesion score (darkness has weight 1). The constants below
# were chosen on every third `val` image (mean Dice 0.74 with no growth, saturation 0.5 and centre
# scale 0.35; 0.85 as set).
SATURATION_WEIGHT = 1.0
# Morphology kernel (odd, px at WORK_SIDE) and the score's blur radius.
MORPH_SIZE = 5
BLUR_RADIUS = 1.5
# Final dilation (odd kernel px at WORK_SIDE; 1 = none): the dataset's masks draw the lesion's
# border generously, a little outside where the pigment fades into the skin.
GROW_SIZE = 7
# The centre weight: a component's area counts exp(-(d / (CENTRE_SCALE * diagonal))^2), d the
# distance of its centroid from the image's centre.
CENTRE_SCALE = 0.2
# Components kept as candidates: enough for noise, bounded so one pathological image stays cheap.
MAX_COMPONENTS = 64


@dataclass(frozen=True)
class Segmentation:
    """A binary lesion mask at the working size and the lesion's share of the image."""

    mask: NDArray[np.bool_]
    area_fraction: float


def _working_image(image: Image.Image) -> NDArray[np.float64]:
    """The image as float RGB (0..255) with its long side WORK_SIDE."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = WORK_SIDE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(rgb.resize(size, Image.Resampling.BILINEAR), dtype=np.float64)


def shades_of_grey(rgb: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Colour constancy: each channel scaled so the Minkowski p-mean of the valid pixels is grey."""
    pixels = rgb[valid] if valid.any() else rgb.reshape(-1, 3)
    illuminant = np.power(np.mean(np.power(pixels, SHADES_OF_GREY_P), axis=0), 1.0 / SHADES_OF_GREY_P)
    illuminant = np.maximum(illuminant, 1e-6)
    gain = illuminant.mean() / illuminant
    balanced: NDArray[np.float64] = np.clip(rgb * gain, 0.0, 255.0)
    return balanced


def lesion_score(rgb: NDArray[np.float64]) -> NDArray[np.float64]:
    """Darkness and saturation (weighted), scaled to [0, 1]: high on pigmented lesions."""
    top = rgb.max(axis=2)
    bottom = rgb.min(axis=2)
    darkness = 1.0 - rgb.mean(axis=2) / 255.0
    saturation = (top - bottom) / np.maximum(top, 1.0)
    score: NDArray[np.float64] = (darkness + SATURATION_WEIGHT * saturation) / (1.0 + SATURATION_WEIGHT)
    return score


def otsu_threshold(values: NDArray[np.float64], bins: int = 128) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of `values`."""
    if values.size == 0:
        return 0.0
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        return high
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2.0
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _mask_image(mask: NDArray[np.bool_]) -> Image.Image:
    """A mask as an 8-bit image (0/255) that owns its pixels: `Image.fromarray` may share the
    array's read-only buffer, where a flood fill's writes would be lost."""
    return Image.fromarray(mask.astype(np.uint8) * 255).copy()


def _morphology(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Opening (removes hairs and specks) then closing (bridges small gaps), by Pillow's filters."""
    image = _mask_image(mask)
    image = image.filter(ImageFilter.MinFilter(MORPH_SIZE)).filter(ImageFilter.MaxFilter(MORPH_SIZE))
    image = image.filter(ImageFilter.MaxFilter(MORPH_SIZE)).filter(ImageFilter.MinFilter(MORPH_SIZE))
    return np.asarray(image) > 127


def fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask with every background region that does not reach the border filled in."""
    image = _mask_image(np.pad(mask, 1))
    # The padding makes the outside one connected region: flood it from a corner.
    ImageDraw.floodfill(image, (0, 0), 128)
    outside = np.asarray(image)[1:-1, 1:-1] == 128
    return np.asarray(~outside)


def components(mask: NDArray[np.bool_], limit: int = MAX_COMPONENTS) -> list[NDArray[np.bool_]]:
    """The 4-connected components of `mask` (at most `limit`, found in raster order)."""
    image = _mask_image(mask)
    found: list[NDArray[np.bool_]] = []
    remaining = mask.copy()
    while remaining.any() and len(found) < limit:
        y, x = np.unravel_index(int(np.argmax(remaining)), remaining.shape)
        ImageDraw.floodfill(image, (int(x), int(y)), 128)
        filled = np.asarray(image) == 128
        found.append(filled)
        remaining &= ~filled
        # Mark the component done so the next fill cannot reach it.
        image.paste(0, mask=_mask_image(filled))
    return found


def _central_component(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The component with the largest centre-weighted area (empty mask: itself)."""
    height, width = mask.shape
    scale = CENTRE_SCALE * float(np.hypot(height, width))
    best, best_score = np.zeros_like(mask), 0.0
    for component in components(mask):
        ys, xs = np.nonzero(component)
        distance = float(np.hypot(ys.mean() - (height - 1) / 2.0, xs.mean() - (width - 1) / 2.0))
        score = ys.size * float(np.exp(-((distance / scale) ** 2)))
        if score > best_score:
            best, best_score = component, score
    return best


def segment_lesion(image: Image.Image) -> Segmentation:
    """The lesion's mask (at the working size) and its share of the image's area."""
    rgb = _working_image(image)
    valid = rgb.mean(axis=2) > VIGNETTE_LEVEL
    score = lesion_score(shades_of_grey(rgb, valid))
    # Blurred as 8 bits: Otsu's 128 bins resolve no finer than that anyway.
    blurred = Image.fromarray(np.clip(score * 255.0, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(BLUR_RADIUS)
    )
    smooth = np.asarray(blurred, dtype=np.float64) / 255.0
    threshold = otsu_threshold(smooth[valid] if valid.any() else smooth.ravel())
    mask = (smooth > threshold) & valid
    mask = fill_holes(_central_component(_morphology(mask)))
    if GROW_SIZE > 1:
        mask = np.asarray(_mask_image(mask).filter(ImageFilter.MaxFilter(GROW_SIZE))) > 127
    return Segmentation(mask=mask, area_fraction=float(mask.mean()))


def resize_mask(mask: NDArray[np.bool_], size: tuple[int, int]) -> NDArray[np.bool_]:
    """A working-size mask brought to `size` (width, height), nearest neighbour."""
    return np.asarray(_mask_image(mask).resize(size, Image.Resampling.NEAREST)) > 127


def dice(predicted: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    """The Dice coefficient 2|A∩B| / (|A|+|B|) of two masks of one shape (1.0 when both are empty)."""
    total = int(predicted.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(predicted, truth).sum()) / total
