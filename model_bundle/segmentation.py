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
from PIL import Image, ImageFilter

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
    """A mask as an 8-bit image (0/255), for Pillow's min/max filters."""
    return Image.fromarray(mask.astype(np.uint8) * 255)


def _square_filter(mask: NDArray[np.bool_], size: int, keep_all: bool) -> NDArray[np.bool_]:
    """Erosion (`keep_all`: a pixel stays set when its whole `size` x `size` square is set) or
    dilation (any of it) with the image's edge repeated outward, as Pillow's MinFilter/MaxFilter
    do, from the window sums of an integral image (Pillow's rank filter cost ~1 ms per call)."""
    padded = np.pad(mask, size // 2, mode="edge").astype(np.int32)
    integral = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int32)
    integral[1:, 1:] = padded.cumsum(axis=0).cumsum(axis=1)
    sums = (
        integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    )
    filtered: NDArray[np.bool_] = sums == size * size if keep_all else sums > 0
    return filtered


def _morphology(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Opening (removes hairs and specks) then closing (bridges small gaps)."""
    opened = _square_filter(_square_filter(mask, MORPH_SIZE, keep_all=True), MORPH_SIZE, keep_all=False)
    return _square_filter(_square_filter(opened, MORPH_SIZE, keep_all=False), MORPH_SIZE, keep_all=True)


def label_components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    """4-connected components of `mask`: a label per pixel (0 = background, 1..n in the raster
    order of each component's first pixel) and n. Runs of each row are joined to the runs they
    touch in the row above with a union-find over runs, so the work grows with the number of runs
    (a few hundred at the working size), not of pixels: a pixel-by-pixel flood fill in Python
    cost most of a worker's time per image."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    rows, starts = np.nonzero(steps == 1)
    _, ends = np.nonzero(steps == -1)  # exclusive; same row order as the starts
    parent = list(range(len(rows)))

    def root(run: int) -> int:
        while parent[run] != run:
            parent[run] = parent[parent[run]]
            run = parent[run]
        return run

    previous = 0  # first run of the row above the current row
    row_start = 0
    for run in range(len(rows)):
        if run > 0 and rows[run] != rows[run - 1]:
            previous, row_start = (row_start, run) if rows[run] == rows[run - 1] + 1 else (run, run)
        above = previous
        while above < row_start and ends[above] <= starts[run]:
            above += 1
        # Runs above that overlap this one's columns (4-connectivity: a shared column).
        while above < row_start and starts[above] < ends[run]:
            first, second = root(run), root(above)
            if first != second:
                parent[max(first, second)] = min(first, second)
            above += 1
    roots = [root(run) for run in range(len(rows))]
    # A component's label is the rank of its root: roots are the smallest run index of each
    # component, and runs are in raster order, so labels follow each component's first pixel.
    ranks = {value: index + 1 for index, value in enumerate(sorted(set(roots)))}
    labels = np.zeros((height, width), dtype=np.int32)
    for run, run_root in enumerate(roots):
        labels[rows[run], starts[run] : ends[run]] = ranks[run_root]
    return labels, len(ranks)


def fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask with every background region that does not reach the border filled in."""
    # Padded, the outside is one connected background region, the one holding the corner.
    labels, _ = label_components(~np.pad(mask, 1))
    outside = labels[1:-1, 1:-1] == labels[0, 0]
    return np.asarray(~outside)


def components(mask: NDArray[np.bool_], limit: int = MAX_COMPONENTS) -> list[NDArray[np.bool_]]:
    """The 4-connected components of `mask` (at most `limit`, in raster order of their first pixel)."""
    labels, count = label_components(mask)
    return [labels == label for label in range(1, min(count, limit) + 1)]


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
        mask = _square_filter(mask, GROW_SIZE, keep_all=False)
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
