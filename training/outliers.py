"""Outlier images for outlier exposure (Hendrycks et al. 2019): what the dermoscopy-vs-not head
and the uniform-posterior loss learn to turn away.

Never the measurement sets: neither `shared/data/ood` nor scikit-image's samples (which
`training.eval_ood` measures on). The pool is generated here or comes from images that ship
inside packages the training extra already installs:
- photos: scikit-learn's `china.jpg` and `flower.jpg`, matplotlib's `grace_hopper.jpg` and
  `Minduka_Present_Blue_Pack.png`, as random crops at random scales, some shrunk to a few dozen
  pixels (thumbnails look like blurry blobs once upsampled);
- other imaging: matplotlib's MRI slice (`s1045.ima.gz`) and elevation maps, in grey or false
  colour;
- procedural: colour fields, gradients, 1/f noise, dead leaves (natural-image statistics without
  any natural image), stripes and checkerboards, random shapes, rendered text.
A random quarter of everything is turned grey. The pool is deterministic for a seed.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw

U8 = NDArray[np.uint8]
Generator = Callable[[np.random.Generator], U8]


def _package_photos() -> list[U8]:
    import matplotlib
    import sklearn.datasets

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    sk_images = Path(sklearn.datasets.__file__).parent / "images"
    paths = [
        sk_images / "china.jpg",
        sk_images / "flower.jpg",
        sample / "grace_hopper.jpg",
        sample / "Minduka_Present_Blue_Pack.png",
    ]
    photos = []
    for path in paths:
        with Image.open(path) as img:
            photos.append(np.asarray(img.convert("RGB")))
    return photos


def _package_scans() -> list[NDArray[np.float32]]:
    """Single-channel scientific images in [0, 1]: an MRI slice and two elevation maps."""
    import matplotlib

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    with gzip.open(sample / "s1045.ima.gz") as handle:
        mri = np.frombuffer(handle.read(), dtype=np.uint16).reshape(256, 256).astype(np.float32)
    scans = [mri]
    for name, key in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        with np.load(sample / name) as npz:
            scans.append(np.asarray(npz[key], dtype=np.float32))
    out = []
    for scan in scans:
        lo, hi = np.percentile(scan, [1, 99])
        out.append(np.clip((scan - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32))
    return out


def _random_size(rng: np.random.Generator) -> tuple[int, int]:
    width = int(rng.integers(96, 320))
    return width, int(width * rng.uniform(0.6, 1.4))


def _crop(img: U8, rng: np.random.Generator, min_share: float) -> U8:
    height, width = img.shape[:2]
    share = rng.uniform(min_share, 1.0)
    w = max(8, int(width * math.sqrt(share) * rng.uniform(0.8, 1.2)))
    h = max(8, int(height * math.sqrt(share) * rng.uniform(0.8, 1.2)))
    w, h = min(w, width), min(h, height)
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    return img[top : top + h, left : left + w]


def _resize(img: U8, width: int, height: int) -> U8:
    return np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BILINEAR))


def photo_crop(photos: list[U8]) -> Generator:
    def make(rng: np.random.Generator) -> U8:
        crop = _crop(photos[int(rng.integers(len(photos)))], rng, 0.04)
        return _resize(crop, *_random_size(rng))

    return make


def photo_thumbnail(photos: list[U8]) -> Generator:
    def make(rng: np.random.Generator) -> U8:
        crop = _crop(photos[int(rng.integers(len(photos)))], rng, 0.1)
        side = int(rng.integers(16, 72))
        return _resize(crop, side, side)

    return make


def scan(scans: list[NDArray[np.float32]]) -> Generator:
    def make(rng: np.random.Generator) -> U8:
        field = scans[int(rng.integers(len(scans)))]
        crop = _crop((field * 255).astype(np.uint8), rng, 0.2).astype(np.float32) / 255.0
        if rng.random() < 0.5:
            rgb = np.stack([crop] * 3, axis=-1)
        else:  # a false-colour rendering, as a map or a monitor screenshot shows it
            phase = rng.uniform(0, 2 * math.pi, 3)
            rgb = 0.5 + 0.5 * np.sin(2 * math.pi * crop[..., None] * rng.uniform(0.5, 2.0) + phase)
        return _resize((rgb * 255).astype(np.uint8), *_random_size(rng))

    return make


def colour_field(rng: np.random.Generator) -> U8:
    width, height = _random_size(rng)
    colour = rng.integers(0, 256, 3).astype(np.float32)
    noise = rng.normal(0, rng.uniform(0, 12), (height, width, 3))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


def gradient(rng: np.random.Generator) -> U8:
    width, height = _random_size(rng)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * math.pi)
        t = (x * math.cos(angle) + y * math.sin(angle)) / math.hypot(width, height) + 0.5
    else:
        t = np.hypot(x - rng.uniform(0, width), y - rng.uniform(0, height)) / math.hypot(width, height)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    rgb = a + np.clip(t, 0, 1)[..., None] * (b - a)
    out: U8 = rgb.astype(np.uint8)
    return out


def pink_noise(rng: np.random.Generator) -> U8:
    width, height = _random_size(rng)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height)) ** rng.uniform(0.8, 2.0)
    channels = []
    for _ in range(3):
        spectrum = amplitude * np.exp(2j * math.pi * rng.random(amplitude.shape))
        field = np.fft.irfft2(spectrum, s=(height, width))
        channels.append((field - field.mean()) / (field.std() + 1e-9))
    mix = rng.normal(0, 1, (3, 3)) * 0.5 + np.eye(3)
    rgb = np.tensordot(np.stack(channels, axis=-1), mix, axes=(2, 0))
    rgb = 128 + rgb * rng.uniform(20, 60) + rng.uniform(-60, 60, 3)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def dead_leaves(rng: np.random.Generator) -> U8:
    width, height = _random_size(rng)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(30, 200))):
        radius = max(2.0, min(width, height) * 0.5 * rng.random() ** 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        else:
            draw.rectangle(
                (cx - radius, cy - radius * rng.uniform(0.3, 1), cx + radius, cy + radius), fill=colour
            )
    return np.asarray(img)


def pattern(rng: np.random.Generator) -> U8:
    width, height = _random_size(rng)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(4, 40)
    angle = rng.uniform(0, math.pi)
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    kind = int(rng.integers(3))
    if kind == 0:
        t = (np.floor(u / period) % 2).astype(np.float32)
    elif kind == 1:
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    else:
        t = 0.5 + 0.5 * np.sin(2 * math.pi * u / period)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    out: U8 = (a + t[..., None] * (b - a)).astype(np.uint8)
    return out


def shapes(rng: np.random.Generator) -> U8:
    width, height = _random_size(rng)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 12))):
        points = [
            (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
            for _ in range(int(rng.integers(3, 7)))
        ]
        draw.polygon(points, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        if rng.random() < 0.5:
            draw.line(
                points, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 6))
            )
    return np.asarray(img)


def text_page(rng: np.random.Generator) -> U8:
    width, height = _random_size(rng)
    paper = tuple(int(v) for v in rng.integers(170, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    img = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(img)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:-"
    line_height = int(rng.integers(9, 16))
    for row in range(2, height, line_height):
        text = "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), width // 5))
        draw.text((int(rng.integers(0, 10)), row), text, fill=ink)
    return np.asarray(img)


def generators() -> list[tuple[Generator, float]]:
    """(generator, weight) pairs; the weights set each kind's share of the pool."""
    photos, scans = _package_photos(), _package_scans()
    return [
        (photo_crop(photos), 0.2),
        (photo_thumbnail(photos), 0.1),
        (scan(scans), 0.1),
        (colour_field, 0.05),
        (gradient, 0.05),
        (pink_noise, 0.1),
        (dead_leaves, 0.15),
        (pattern, 0.07),
        (shapes, 0.1),
        (text_page, 0.08),
    ]


def outlier_pool(size: int, seed: int) -> list[U8]:
    """`size` outlier images (uint8 RGB, assorted sizes), deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    makers = generators()
    weights = np.array([w for _, w in makers])
    kinds = rng.choice(len(makers), size=size, p=weights / weights.sum())
    pool = []
    for kind in kinds:
        img = makers[int(kind)][0](rng)
        if rng.random() < 0.25:
            grey = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            img = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
        pool.append(np.ascontiguousarray(img))
    return pool
