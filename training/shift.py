"""Deterministic image shifts that mimic another clinic's dermoscopy (ImageNet-C / DermaMNIST-C style).

Each shift maps (rgb HxWx3 uint8, lesion mask HxW bool, seed) to a new (rgb, mask); the mask
follows every geometric change so a test can check, e.g., that zooming out shrinks the lesion.
The parameters were fixed a priori from how other archives and devices differ (framing, white
balance, optics, compression, hair) and are never tuned against a model's results. Randomness
(skin grain, hair) comes only from `seed`; `image_seed` derives it from the image id with a
stable hash, so a benchmark run is reproducible byte for byte. Pure numpy + PIL.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

RGB = NDArray[np.uint8]
Mask = NDArray[np.bool_]
Shift = Callable[[RGB, Mask, int], tuple[RGB, Mask]]

# ITU-R BT.601 luma weights, as the quality gate uses.
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)

SKIN_MASK_DILATION_PX = 5  # keep the lesion's blurry rim out of the skin colour estimate
SKIN_GRAIN_SIGMA = 3.0  # grey levels, per pixel and channel
SKIN_LOW_FREQ_SIGMA = 5.0  # grey levels, a smooth brightness field over a 3x4 grid
PASTE_FEATHER_PX = 3
ZOOM_OUT_SCALE = 0.6
SQUARE_FRAME_SCALE = 0.7
WARM_GAINS = (1.18, 1.0, 0.78)
COOL_GAINS = (0.82, 1.0, 1.20)
GREEN_GAINS = (0.90, 1.12, 0.90)
SCOPE_CONTRAST, SCOPE_SATURATION, SCOPE_GAMMA = 0.8, 1.25, 1.15
SCOPE_VIGNETTE_START, SCOPE_VIGNETTE_DEPTH, SCOPE_RING = 0.55, 0.6, 0.97
JPEG_SCALE, JPEG_QUALITY = 0.4, 25
BLUR_RADIUS_PX = 2.0
HAIR_STRANDS = 12


def image_seed(image_id: str) -> int:
    """A stable per-image seed (CRC-32 of the id; Python's hash() is salted per process)."""
    return zlib.crc32(image_id.encode("utf-8"))


def _to_uint8(x: NDArray[np.floating]) -> RGB:
    out: RGB = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return out


def _resize_rgb(rgb: RGB, width: int, height: int) -> RGB:
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def _resize_mask(mask: Mask, width: int, height: int) -> Mask:
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    out: Mask = np.asarray(img.resize((width, height), Image.Resampling.NEAREST)) > 127
    return out


def _dilate(mask: Mask, radius: int) -> Mask:
    """Binary dilation with a (2r+1)-square, separable, in numpy."""
    out = mask.copy()
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        n = out.shape[axis]
        out = np.zeros_like(out)
        for offset in range(2 * radius + 1):
            out |= np.take(padded, np.arange(offset, offset + n), axis=axis)
    return out


def skin_colour(rgb: RGB, mask: Mask) -> NDArray[np.float32]:
    """Median RGB of the skin: pixels outside the dilated lesion mask, else the outer border."""
    background = ~_dilate(mask, SKIN_MASK_DILATION_PX)
    if background.sum() < 0.01 * mask.size:
        border = np.zeros_like(mask)
        b = SKIN_MASK_DILATION_PX
        border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
        background = border
    out: NDArray[np.float32] = np.median(rgb[background], axis=0).astype(np.float32)
    return out


def _skin_canvas(
    rgb: RGB, mask: Mask, width: int, height: int, rng: np.random.Generator
) -> NDArray[np.float32]:
    """A canvas of plain skin: the skin median, a smooth brightness field and fine grain."""
    coarse = rng.normal(0.0, 1.0, (3, 4)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    field = field / max(float(field.std()), 1e-6) * SKIN_LOW_FREQ_SIGMA
    grain = rng.normal(0.0, SKIN_GRAIN_SIGMA, (height, width, 3)).astype(np.float32)
    canvas = skin_colour(rgb, mask)[None, None, :] + field[..., None] + grain
    out: NDArray[np.float32] = canvas.astype(np.float32)
    return out


def _feather(height: int, width: int) -> NDArray[np.float32]:
    """Alpha of a pasted patch: 1 inside, ramping to 0 over PASTE_FEATHER_PX at its edges."""

    def ramp(n: int) -> NDArray[np.float32]:
        i = np.arange(n, dtype=np.float32) + 0.5
        out: NDArray[np.float32] = np.clip(np.minimum(i, n - i) / PASTE_FEATHER_PX, 0.0, 1.0)
        return out

    alpha: NDArray[np.float32] = np.outer(ramp(height), ramp(width)).astype(np.float32)
    return alpha


def _paste_on_skin(
    rgb: RGB, mask: Mask, seed: int, scale: float, canvas_hw: tuple[int, int]
) -> tuple[RGB, Mask]:
    """The image scaled by `scale`, centred with a feathered edge on a canvas of skin."""
    h, w = mask.shape
    ch, cw = canvas_hw
    nw, nh = round(w * scale), round(h * scale)
    canvas = _skin_canvas(rgb, mask, cw, ch, np.random.default_rng(seed))
    top, left = (ch - nh) // 2, (cw - nw) // 2
    alpha = _feather(nh, nw)[..., None]
    region = canvas[top : top + nh, left : left + nw]
    canvas[top : top + nh, left : left + nw] = alpha * _resize_rgb(rgb, nw, nh) + (1.0 - alpha) * region
    out_mask = np.zeros((ch, cw), dtype=bool)
    out_mask[top : top + nh, left : left + nw] = _resize_mask(mask, nw, nh)
    return _to_uint8(canvas), out_mask


def identity(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """The clean image, unchanged."""
    return rgb, mask


def squash_square(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """Non-uniform resize to a min(w, h) square (a pipeline that squashes to square)."""
    side = min(mask.shape)
    return _resize_rgb(rgb, side, side), _resize_mask(mask, side, side)


def zoom_out(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """The image at 0.6x centred on same-size skin: the lesion fills less of the frame."""
    return _paste_on_skin(rgb, mask, seed, ZOOM_OUT_SCALE, mask.shape)


def square_frame_zoom_out(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """Another archive's square framing: the image at 0.7x centred on a max(w, h) square of skin."""
    side = max(mask.shape)
    return _paste_on_skin(rgb, mask, seed, SQUARE_FRAME_SCALE, (side, side))


def _gains(rgb: RGB, gains: tuple[float, float, float]) -> RGB:
    return _to_uint8(rgb.astype(np.float32) * np.asarray(gains, dtype=np.float32))


def warm_cast(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """Warm white-balance error: (R, G, B) gains (1.18, 1.0, 0.78)."""
    return _gains(rgb, WARM_GAINS), mask


def cool_cast(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """Cool white-balance error: (R, G, B) gains (0.82, 1.0, 1.20)."""
    return _gains(rgb, COOL_GAINS), mask


def green_tint(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """Fluorescent white balance: (R, G, B) gains (0.90, 1.12, 0.90)."""
    return _gains(rgb, GREEN_GAINS), mask


def dermatoscope(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """Another dermatoscope's look: lower contrast, polarised saturation, gamma, vignette, ring."""
    x = rgb.astype(np.float32)
    mean = float(x.mean())
    x = mean + SCOPE_CONTRAST * (x - mean)
    luma = (x @ _LUMA)[..., None]
    x = np.clip(luma + SCOPE_SATURATION * (x - luma), 0.0, 255.0)
    x = 255.0 * (x / 255.0) ** SCOPE_GAMMA
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(yy + 0.5 - h / 2, xx + 0.5 - w / 2) / (np.hypot(h, w) / 2)
    ramp = np.clip((r - SCOPE_VIGNETTE_START) / (1.0 - SCOPE_VIGNETTE_START), 0.0, 1.0)
    gain = (1.0 - SCOPE_VIGNETTE_DEPTH * ramp**2) * (r <= SCOPE_RING)
    return _to_uint8(x * gain[..., None]), mask


def jpeg_downscale(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """A low-resolution, heavily compressed upload: 40% bilinear, JPEG q25, back to size."""
    h, w = mask.shape
    small = Image.fromarray(rgb).resize(
        (round(w * JPEG_SCALE), round(h * JPEG_SCALE)), Image.Resampling.BILINEAR
    )
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        out = decoded.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(out), mask


def blur(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """Defocus: Gaussian blur, radius 2.0 px."""
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(BLUR_RADIUS_PX))), mask


def hair(rgb: RGB, mask: Mask, seed: int) -> tuple[RGB, Mask]:
    """12 dark hairs, 1-2 px wide quadratic Bezier curves across the image, seeded per image."""
    rng = np.random.default_rng(seed)
    h, w = mask.shape
    diagonal = float(np.hypot(h, w))
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    t = np.linspace(0.0, 1.0, 48)[:, None]
    for _ in range(HAIR_STRANDS):
        start = rng.uniform((-0.1 * w, -0.1 * h), (1.1 * w, 1.1 * h))
        angle = rng.uniform(0.0, np.pi)
        length = rng.uniform(0.3, 0.9) * diagonal
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-np.sin(angle), np.cos(angle)])
        control = (start + end) / 2 + rng.uniform(-0.25, 0.25) * length * normal
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
        level = rng.uniform(10.0, 60.0)  # black to dark brown: R > G > B
        colour = (round(level), round(level * 0.8), round(level * 0.6))
        width = int(rng.integers(1, 3))
        draw.line([(float(x), float(y)) for x, y in curve], fill=colour, width=width)
    return np.asarray(img), mask


@dataclass(frozen=True)
class ShiftInfo:
    """What a shift mimics, and its fixed parameters, in words (for the JSON and the card)."""

    mimics: str
    parameters: str


SHIFTS: dict[str, Shift] = {
    "identity": identity,
    "squash_square": squash_square,
    "zoom_out": zoom_out,
    "square_frame_zoom_out": square_frame_zoom_out,
    "warm_cast": warm_cast,
    "cool_cast": cool_cast,
    "green_tint": green_tint,
    "dermatoscope": dermatoscope,
    "jpeg_downscale": jpeg_downscale,
    "blur": blur,
    "hair": hair,
}

SHIFT_INFO: dict[str, ShiftInfo] = {
    "identity": ShiftInfo("the clean test image", "none"),
    "squash_square": ShiftInfo(
        "a pipeline that squashes to a square", "non-uniform resize to min(w,h) x min(w,h), bilinear"
    ),
    "zoom_out": ShiftInfo(
        "a wider field of view: the lesion fills less of the frame",
        f"scale {ZOOM_OUT_SCALE} centred on same-size skin (median of non-lesion pixels, mask dilated "
        f"{SKIN_MASK_DILATION_PX} px; grain sigma {SKIN_GRAIN_SIGMA:g}, low-frequency sigma "
        f"{SKIN_LOW_FREQ_SIGMA:g}); {PASTE_FEATHER_PX} px feathered edge",
    ),
    "square_frame_zoom_out": ShiftInfo(
        "another archive's square framing with skin borders",
        f"max(w,h) square of skin, image scaled {SQUARE_FRAME_SCALE} and centred",
    ),
    "warm_cast": ShiftInfo("a warm white-balance error", f"RGB gains {WARM_GAINS}"),
    "cool_cast": ShiftInfo("a cool white-balance error", f"RGB gains {COOL_GAINS}"),
    "green_tint": ShiftInfo("fluorescent-light white balance", f"RGB gains {GREEN_GAINS}"),
    "dermatoscope": ShiftInfo(
        "another (polarised) dermatoscope",
        f"contrast x{SCOPE_CONTRAST}, saturation x{SCOPE_SATURATION}, gamma {SCOPE_GAMMA}, vignette "
        f"1 - {SCOPE_VIGNETTE_DEPTH}*clip((r-{SCOPE_VIGNETTE_START})/{1 - SCOPE_VIGNETTE_START:.2f},0,1)^2, "
        f"black beyond r > {SCOPE_RING} (r = distance / half-diagonal)",
    ),
    "jpeg_downscale": ShiftInfo(
        "a low-resolution, compressed upload",
        f"downscale to {JPEG_SCALE:.0%} (bilinear), JPEG quality {JPEG_QUALITY}, upscale back",
    ),
    "blur": ShiftInfo("an out-of-focus capture", f"Gaussian blur radius {BLUR_RADIUS_PX} px"),
    "hair": ShiftInfo(
        "hair over the lesion", f"{HAIR_STRANDS} dark quadratic Bezier strands, 1-2 px wide, seeded per image"
    ),
}
