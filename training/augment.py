"""Training-time augmentation on uint8 RGB arrays (no torchvision: it has no CPU wheel here).

Dermoscopy has no canonical orientation, so flips and 90-degree rotations are label-preserving.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from contracts.bundle import Preprocessing
from model_bundle.preprocessing import normalize


def random_resized_crop(
    rgb: NDArray[np.uint8], size: int, scale_min: float, rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Crop a random area fraction in [scale_min, 1] with aspect in [3/4, 4/3], resize to size^2."""
    height, width = rgb.shape[:2]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(scale_min, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            break
    else:  # fall back to the central square, as the eval transform does
        h = w = min(height, width)
        top, left = (height - h) // 2, (width - w) // 2
    patch = Image.fromarray(rgb[top : top + h, left : left + w])
    return np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def flip_and_rotate(rgb: NDArray[np.uint8], rng: np.random.Generator) -> NDArray[np.uint8]:
    """Random horizontal flip and a random multiple of 90 degrees (8 dihedral poses)."""
    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
    rotated: NDArray[np.uint8] = np.ascontiguousarray(np.rot90(rgb, k=int(rng.integers(0, 4))))
    return rotated


def color_jitter(rgb: NDArray[np.uint8], strength: float, rng: np.random.Generator) -> NDArray[np.uint8]:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s]."""
    if strength <= 0:
        return rgb
    img = rgb.astype(np.float32)
    img *= rng.uniform(1 - strength, 1 + strength)
    gray_mean = img.mean()
    img = (img - gray_mean) * rng.uniform(1 - strength, 1 + strength) + gray_mean
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * rng.uniform(1 - strength, 1 + strength) + gray
    jittered: NDArray[np.uint8] = np.clip(img, 0, 255).astype(np.uint8)
    return jittered


def augment(
    rgb: NDArray[np.uint8],
    spec: Preprocessing,
    scale_min: float,
    jitter: float,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """One training view: crop, pose, colour, then the bundle's own normalization."""
    view = random_resized_crop(rgb, spec.crop_size, scale_min, rng)
    view = color_jitter(flip_and_rotate(view, rng), jitter, rng)
    return normalize(view, spec)
