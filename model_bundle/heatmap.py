"""Class-activation heatmaps from the ONNX `feature_map` output: no gradients needed."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image


def class_activation_map(
    feature_map: NDArray[np.floating], weights: NDArray[np.floating] | None, class_index: int
) -> NDArray[np.float32]:
    """(C, h, w) features -> (h, w) map in [0, 1]. With a linear head, CAM = sum_k w[c, k] F_k;
    otherwise the L2 norm over channels (where the network responds at all)."""
    fmap = np.asarray(feature_map, dtype=np.float32)
    if weights is not None:
        cam = np.tensordot(np.asarray(weights, dtype=np.float32)[class_index], fmap, axes=(0, 0))
    else:
        cam = np.linalg.norm(fmap, axis=0)
    cam = np.maximum(cam, 0.0)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam).astype(np.float32)


def _colormap(values: NDArray[np.float32]) -> NDArray[np.uint8]:
    """A blue -> yellow -> red ramp; alpha rises with activation so cold areas stay clear."""
    v = np.clip(values, 0.0, 1.0)
    red = np.clip(2.0 * v, 0, 1)
    green = 1.0 - np.abs(2.0 * v - 1.0)
    blue = np.clip(1.0 - 2.0 * v, 0, 1)
    alpha = 0.15 + 0.6 * v
    return (np.stack([red, green, blue, alpha], axis=-1) * 255).astype(np.uint8)


def heatmap_png(cam: NDArray[np.float32], width: int, height: int) -> bytes:
    """An RGBA PNG overlay of the map, resized to the image's size (the crop covers the centre,
    so the map is placed over the centred square and the rest stays transparent)."""
    side = min(width, height)
    small = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8), mode="L")
    square = np.asarray(small.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    overlay = np.zeros((height, width, 4), dtype=np.uint8)
    top, left = (height - side) // 2, (width - side) // 2
    overlay[top : top + side, left : left + side] = _colormap(square)
    buffer = io.BytesIO()
    # optimize=True costs ~7x the encode time (37 vs 5 ms at 200x150) to save ~6% of the bytes.
    Image.fromarray(overlay, mode="RGBA").save(buffer, format="PNG")
    return buffer.getvalue()
