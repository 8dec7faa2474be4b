"""Image -> model input tensor, driven only by the bundle's `Preprocessing` constants.

Training's evaluation and every serving path call these functions, so the tensor a model sees in
production is byte-for-byte the one it was evaluated on. Only PIL and numpy: no torch here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from contracts.bundle import Preprocessing

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Scale the shorter side to `resize_shorter_to`, then take the centred square crop."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = spec.resize_shorter_to / min(width, height)
    new_w, new_h = max(spec.crop_size, round(width * scale)), max(spec.crop_size, round(height * scale))
    resized = rgb.resize((new_w, new_h), _RESAMPLE[spec.interpolation])
    left, top = (new_w - spec.crop_size) // 2, (new_h - spec.crop_size) // 2
    return resized.crop((left, top, left + spec.crop_size, top + spec.crop_size))


def normalize(rgb: NDArray[np.uint8], spec: Preprocessing) -> NDArray[np.float32]:
    """HWC uint8 RGB -> CHW float32, scaled and standardized per channel."""
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec.std, dtype=np.float32).reshape(3, 1, 1)
    chw = rgb.astype(np.float32).transpose(2, 0, 1) * np.float32(spec.scale)
    return ((chw - mean) / std).astype(np.float32)


def preprocess(image: Image.Image, spec: Preprocessing) -> NDArray[np.float32]:
    """One PIL image -> a (3, crop, crop) float32 array ready to stack into a batch."""
    return normalize(np.asarray(resize_and_crop(image, spec), dtype=np.uint8), spec)
