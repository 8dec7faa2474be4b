"""Image -> model input tensor, driven only by the bundle's `Preprocessing` constants.

Training (augmented views and evaluation) and every serving path call these functions, so the
tensor a model sees in production is byte-for-byte the one it was trained and evaluated on. Only
PIL and numpy: no torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from contracts.bundle import ColourConstancy, Preprocessing

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class Placement:
    """Where the image landed in the model's input: `rotated` (turned 90 degrees clockwise to
    landscape first), and the content box (left, top, width, height) in input pixels. For a centre
    crop the box is the crop's footprint in the resized image (it may start outside the input)."""

    rotated: bool
    left: float
    top: float
    width: float
    height: float


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Format 1: scale the shorter side to `resize_shorter_to`, then take the centred square crop."""
    assert spec.resize_shorter_to is not None and spec.crop_size is not None
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = spec.resize_shorter_to / min(width, height)
    new_w, new_h = max(spec.crop_size, round(width * scale)), max(spec.crop_size, round(height * scale))
    resized = rgb.resize((new_w, new_h), _RESAMPLE[spec.interpolation])
    left, top = (new_w - spec.crop_size) // 2, (new_h - spec.crop_size) // 2
    return resized.crop((left, top, left + spec.crop_size, top + spec.crop_size))


def letterbox_size(width: int, height: int, spec: Preprocessing) -> tuple[bool, int, int]:
    """(rotate, content width, content height) of an image of this size in the letterbox canvas."""
    assert spec.input_width is not None and spec.input_height is not None
    rotate = spec.orient_landscape and height > width
    if rotate:
        width, height = height, width
    scale = min(spec.input_width / width, spec.input_height / height)
    return (
        rotate,
        max(1, min(spec.input_width, round(width * scale))),
        max(1, min(spec.input_height, round(height * scale))),
    )


def letterbox_content(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Format 2: the image turned landscape (if the spec says so) and scaled to fit the canvas,
    aspect kept; the padding is added after normalization by `preprocess`."""
    rgb = image.convert("RGB")
    rotate, new_w, new_h = letterbox_size(*rgb.size, spec)
    if rotate:
        rgb = rgb.transpose(Image.Transpose.ROTATE_270)  # 90 degrees clockwise
    if rgb.size == (new_w, new_h):
        return rgb
    return rgb.resize((new_w, new_h), _RESAMPLE[spec.interpolation])


def _power(x: NDArray[np.float32], p: float) -> NDArray[np.float32]:
    """x**p; an integer p by repeated squaring (5x faster than np.power for p=6 in float32)."""
    if p != int(p) or p < 1:
        out: NDArray[np.float32] = np.power(x, np.float32(p))
        return out
    n, base = int(p), x
    result: NDArray[np.float32] | None = None
    while n:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if n:
            base = base * base
    assert result is not None
    return result


def shades_of_gray(rgb: NDArray[np.uint8] | NDArray[np.float32], cc: ColourConstancy) -> NDArray[np.float32]:
    """Shades of Gray colour constancy on an HxWx3 image in 0-255: each channel is divided by its
    Minkowski p-norm mean and multiplied by the mean of the three, so the estimated illuminant
    becomes neutral and overall intensity is kept. Result clipped to [0, 255], float32."""
    img = np.asarray(rgb, dtype=np.float32)
    # Normalise before the power so p=6 stays far from float32 overflow (255**6 ~ 2.7e14 is fine,
    # but a mean of many such terms loses the small channels' precision).
    unit = img / np.float32(255.0)
    illuminant = np.power(np.mean(_power(unit, cc.power), axis=(0, 1)), 1.0 / cc.power)
    illuminant = np.maximum(illuminant, np.float32(1e-6))
    gains = (illuminant.mean() / illuminant).astype(np.float32)
    out: NDArray[np.float32] = np.clip(img * gains, 0.0, 255.0).astype(np.float32)
    return out


def normalize(rgb: NDArray[np.uint8] | NDArray[np.float32], spec: Preprocessing) -> NDArray[np.float32]:
    """HWC RGB in 0-255 -> CHW float32, colour-corrected (if the spec says so), scaled and
    standardized per channel."""
    img = np.asarray(rgb, dtype=np.float32)
    if spec.colour_constancy is not None:
        img = shades_of_gray(img, spec.colour_constancy)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    chw = img.transpose(2, 0, 1) * np.float32(spec.scale)
    return ((chw - mean) / std).astype(np.float32)


def pad_to_canvas(chw: NDArray[np.float32], spec: Preprocessing) -> NDArray[np.float32]:
    """Centre a normalized (3, h, w) content tensor on the (3, H, W) canvas filled with pad_value."""
    height, width = spec.input_hw
    _, h, w = chw.shape
    if (h, w) == (height, width):
        return chw
    canvas = np.full((3, height, width), spec.pad_value, dtype=np.float32)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[:, top : top + h, left : left + w] = chw
    return canvas


def prepare_rgb(rgb: NDArray[np.uint8], spec: Preprocessing) -> NDArray[np.float32]:
    """An HxWx3 uint8 array already at its model-input content size (a centre crop, or a
    letterbox content image) -> the (3, H, W) input tensor. Training's augmented views enter here."""
    chw = normalize(rgb, spec)
    return pad_to_canvas(chw, spec) if spec.resize_policy == "letterbox" else chw


def preprocess(image: Image.Image, spec: Preprocessing) -> NDArray[np.float32]:
    """One PIL image -> a (3, H, W) float32 array ready to stack into a batch."""
    if spec.resize_policy == "letterbox":
        content = letterbox_content(image, spec)
    else:
        content = resize_and_crop(image, spec)
    return prepare_rgb(np.asarray(content, dtype=np.uint8), spec)


def placement(width: int, height: int, spec: Preprocessing) -> Placement:
    """Where an image of this size lies in the model's input (for mapping heatmaps back)."""
    input_h, input_w = spec.input_hw
    if spec.resize_policy == "letterbox":
        rotated, w, h = letterbox_size(width, height, spec)
        return Placement(rotated, (input_w - w) // 2, (input_h - h) // 2, w, h)
    assert spec.resize_shorter_to is not None and spec.crop_size is not None
    scale = spec.resize_shorter_to / min(width, height)
    new_w, new_h = max(spec.crop_size, round(width * scale)), max(spec.crop_size, round(height * scale))
    return Placement(False, -((new_w - spec.crop_size) // 2), -((new_h - spec.crop_size) // 2), new_w, new_h)
