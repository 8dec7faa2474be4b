"""Training-time augmentation on uint8 RGB arrays (no torchvision: it has no CPU wheel here).

Two families:
- pose and framing: flips, random resized crops, zoom-out onto surrounding skin, aspect squash
  (dermoscopy has no canonical orientation, so flips are label-preserving);
- acquisition: what another clinic's dermatoscope and pipeline do to an image: white-balance
  and colour-temperature casts, brightness/contrast/saturation/gamma, a circular vignette or the
  black ring of a contact dermatoscope, blur, downscale plus JPEG, hair-like lines, sensor noise.

They cover the same families as the shift benchmark (`training.shift`) on purpose, but with their
own random parameters and implementations, so the benchmark stays a held-out measurement: e.g.
zoom-out here fills the border with the image's own edge colour and smooth noise, the benchmark
uses the lesion mask's skin colour; hair here is random polylines, there fixed Bezier strands.

Every view ends in the bundle's own preprocessing (`model_bundle.preprocessing.preprocess`), so
training sees exactly the tensors serving builds.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from contracts.bundle import Preprocessing
from model_bundle.preprocessing import preprocess

U8 = NDArray[np.uint8]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each augmentation (`strength` 0 turns acquisition ones off)."""

    crop_scale_min: float = 0.6
    color_jitter: float = 0.2
    shift_families: bool = True
    p_zoom_out: float = 0.3
    zoom_out_range: tuple[float, float] = (0.45, 0.9)
    p_squash: float = 0.3
    squash_range: tuple[float, float] = (0.7, 1.35)
    p_cast: float = 0.5
    cast_range: float = 0.18
    p_gamma: float = 0.3
    p_vignette: float = 0.25
    p_ring: float = 0.1
    p_blur: float = 0.2
    p_jpeg: float = 0.3
    p_hair: float = 0.2
    p_noise: float = 0.1


def random_resized_crop(rgb: U8, scale_min: float, rng: np.random.Generator) -> U8:
    """Crop a random area fraction in [scale_min, 1] with aspect jittered in [3/4, 4/3] of the
    image's own (the size is left to the bundle's letterbox or crop)."""
    height, width = rgb.shape[:2]
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(scale_min, 1.0)
        aspect = (width / height) * math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return rgb[top : top + h, left : left + w]
    return rgb


def flip(rgb: U8, rng: np.random.Generator) -> U8:
    """Random horizontal and vertical flips (with both, a 180-degree turn)."""
    if rng.random() < 0.5:
        rgb = rgb[:, ::-1]
    if rng.random() < 0.5:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb)


def zoom_out(rgb: U8, factor: float, rng: np.random.Generator) -> U8:
    """The image shrunk by `factor` at a random position on a same-size canvas of 'skin': the
    median colour of the image's outer border plus smooth low-frequency variation and grain."""
    height, width = rgb.shape[:2]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    base = np.median(border, axis=0)
    coarse = rng.normal(0.0, 6.0, (4, 4, 3)).astype(np.float32)
    smooth = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        ),
        dtype=np.float32,
    )
    grain = rng.normal(0.0, 3.0, (height, width, 1)).astype(np.float32)
    canvas = np.clip(base + (smooth - 128) + grain, 0, 255).astype(np.uint8)
    w, h = max(8, round(width * factor)), max(8, round(height * factor))
    small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    # A feathered edge (4 px ramp) so the pasted rectangle is not a sharp cue.
    ramp = np.minimum.outer(
        np.minimum(np.arange(h), np.arange(h)[::-1]), np.minimum(np.arange(w), np.arange(w)[::-1])
    )
    alpha = np.clip((ramp + 1) / 4.0, 0.0, 1.0)[..., None].astype(np.float32)
    region = canvas[top : top + h, left : left + w].astype(np.float32)
    canvas[top : top + h, left : left + w] = (alpha * small + (1 - alpha) * region).astype(np.uint8)
    out: U8 = canvas
    return out


def squash(rgb: U8, ratio: float) -> U8:
    """Width scaled by `ratio` relative to height (a pipeline that ignores aspect ratio)."""
    height, width = rgb.shape[:2]
    return np.asarray(
        Image.fromarray(rgb).resize((max(8, round(width * ratio)), height), Image.Resampling.BILINEAR)
    )


def color_jitter(rgb: U8, strength: float, rng: np.random.Generator) -> U8:
    """Brightness, contrast and saturation each scaled by a factor in [1-s, 1+s]."""
    if strength <= 0:
        return rgb
    img = rgb.astype(np.float32)
    img *= rng.uniform(1 - strength, 1 + strength)
    gray_mean = img.mean()
    img = (img - gray_mean) * rng.uniform(1 - strength, 1 + strength) + gray_mean
    gray = img.mean(axis=2, keepdims=True)
    img = (img - gray) * rng.uniform(1 - strength, 1 + strength) + gray
    jittered: U8 = np.clip(img, 0, 255).astype(np.uint8)
    return jittered


def colour_cast(rgb: U8, spread: float, rng: np.random.Generator) -> U8:
    """Per-channel gains: a white-balance error plus a warm/cool colour-temperature tilt."""
    gains = rng.uniform(1 - spread, 1 + spread, 3)
    tilt = rng.uniform(-spread, spread)
    gains *= np.array([1 + tilt, 1.0, 1 - tilt])
    out: U8 = np.clip(rgb.astype(np.float32) * gains.astype(np.float32), 0, 255).astype(np.uint8)
    return out


def gamma(rgb: U8, value: float) -> U8:
    """Tone curve x -> 255 (x/255)^value."""
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** value, 0, 255).astype(np.uint8)
    out: U8 = lut[rgb]
    return out


def _radius_map(height: int, width: int, cx: float, cy: float) -> NDArray[np.float32]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r: NDArray[np.float32] = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / math.hypot(width / 2, height / 2)
    return r


def vignette(rgb: U8, strength: float, start: float, rng: np.random.Generator) -> U8:
    """Darken smoothly beyond `start` (share of the half-diagonal), centre jittered a little."""
    height, width = rgb.shape[:2]
    cx = width / 2 + rng.uniform(-0.05, 0.05) * width
    cy = height / 2 + rng.uniform(-0.05, 0.05) * height
    r = _radius_map(height, width, cx, cy)
    fall = np.clip((r - start) / max(1e-3, 1.0 - start), 0.0, 1.0) ** 2
    factor = (1.0 - strength * fall)[..., None]
    out: U8 = np.clip(rgb.astype(np.float32) * factor, 0, 255).astype(np.uint8)
    return out


def dark_ring(rgb: U8, radius: float, rng: np.random.Generator) -> U8:
    """Black outside a circle of `radius` (share of the half-diagonal): a contact dermatoscope's
    field of view, with a soft 2-4 px edge."""
    height, width = rgb.shape[:2]
    r = _radius_map(height, width, width / 2, height / 2) * math.hypot(width / 2, height / 2)
    edge = rng.uniform(2.0, 4.0)
    limit = radius * math.hypot(width / 2, height / 2)
    keep = np.clip((limit - r) / edge, 0.0, 1.0)[..., None]
    out: U8 = (rgb.astype(np.float32) * keep).astype(np.uint8)
    return out


def blur(rgb: U8, radius: float) -> U8:
    """Gaussian blur of `radius` px (defocus, motion-free)."""
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


def downscale_jpeg(rgb: U8, scale: float, quality: int) -> U8:
    """Down- then up-sample by `scale`, then a JPEG round trip at `quality`."""
    height, width = rgb.shape[:2]
    img = Image.fromarray(rgb)
    small = img.resize(
        (max(8, round(width * scale)), max(8, round(height * scale))), Image.Resampling.BILINEAR
    )
    img = small.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def hair(rgb: U8, count: int, rng: np.random.Generator) -> U8:
    """`count` dark random polylines (hairs) of 1-2 px across the image."""
    height, width = rgb.shape[:2]
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    for _ in range(count):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        angle = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(int(rng.integers(3, 7))):
            angle += rng.normal(0, 0.3)
            step = rng.uniform(0.08, 0.2) * width
            x, y = x + step * math.cos(angle), y + step * math.sin(angle)
            points.append((x, y))
        shade = int(rng.integers(10, 70))
        colour = (shade + int(rng.integers(0, 25)), shade, max(0, shade - int(rng.integers(0, 15))))
        draw.line(points, fill=colour, width=int(rng.integers(1, 3)))
    return np.asarray(img)


def sensor_noise(rgb: U8, sigma: float, rng: np.random.Generator) -> U8:
    """Additive Gaussian noise of `sigma` grey levels."""
    noisy = rgb.astype(np.float32) + rng.normal(0.0, sigma, rgb.shape).astype(np.float32)
    out: U8 = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def acquisition(rgb: U8, cfg: AugmentConfig, rng: np.random.Generator) -> U8:
    """The shift-family augmentations, each applied with its own probability."""
    if rng.random() < cfg.p_zoom_out:
        rgb = zoom_out(rgb, rng.uniform(*cfg.zoom_out_range), rng)
    if rng.random() < cfg.p_squash:
        rgb = squash(rgb, rng.uniform(*cfg.squash_range))
    if rng.random() < cfg.p_hair:
        rgb = hair(rgb, int(rng.integers(1, 9)), rng)
    if rng.random() < cfg.p_cast:
        rgb = colour_cast(rgb, cfg.cast_range, rng)
    if rng.random() < cfg.p_gamma:
        rgb = gamma(rgb, float(np.exp(rng.uniform(math.log(0.75), math.log(1.35)))))
    if rng.random() < cfg.p_vignette:
        rgb = vignette(rgb, rng.uniform(0.3, 0.8), rng.uniform(0.4, 0.8), rng)
    if rng.random() < cfg.p_ring:
        rgb = dark_ring(rgb, rng.uniform(0.8, 1.0), rng)
    if rng.random() < cfg.p_blur:
        rgb = blur(rgb, rng.uniform(0.4, 1.6))
    if rng.random() < cfg.p_noise:
        rgb = sensor_noise(rgb, rng.uniform(2.0, 7.0), rng)
    if rng.random() < cfg.p_jpeg:
        rgb = downscale_jpeg(rgb, rng.uniform(0.35, 0.9), int(rng.integers(20, 90)))
    return rgb


def augmented_view(rgb: U8, cfg: AugmentConfig, rng: np.random.Generator) -> U8:
    """One augmented uint8 image at the source resolution (before the bundle's preprocessing)."""
    view = flip(random_resized_crop(rgb, cfg.crop_scale_min, rng), rng)
    if cfg.shift_families:
        view = acquisition(view, cfg, rng)
    return color_jitter(view, cfg.color_jitter, rng)


def augment(
    rgb: U8, spec: Preprocessing, cfg: AugmentConfig, rng: np.random.Generator
) -> NDArray[np.float32]:
    """One training view: pose, framing, acquisition, colour, then the bundle's preprocessing."""
    return preprocess(Image.fromarray(augmented_view(rgb, cfg, rng)), spec)
