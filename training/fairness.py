"""Fairness by skin tone for the model card: the Individual Typology Angle (ITA) of each image's
non-lesion skin, its Del Bino bins, and per-subgroup metrics (skin tone, sex, age band, body site)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from training.data import SPLITS, Sample, load_ham10000, read_rgb
from training.metrics import balanced_accuracy, expected_calibration_error

# sRGB (IEC 61966-2-1) linear RGB -> XYZ, and the D65 reference white (2-degree observer).
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
D65_WHITE = np.array([0.95047, 1.0, 1.08883])

# A 7x7 max filter grows the lesion mask by 3 px (1.5% of a 200 px wide image): the masks were
# drawn at a higher resolution, so at 200x150 the lesion's blurred rim sits in the first pixels
# outside them. Measured on 300 HAM10000 images: 1x1..21x21 filters move the median ITA by < 0.4°.
DILATION_SIZE = 7
# Pixels with L* < 10 are not skin that the dermatoscope lit (colorimetry of the darkest skin reads
# L* ~ 25-35): they are the scope's unlit vignette ring, deep shadow and the darkest hair. Dropping
# them keeps the ring from counting as skin toward MIN_SKIN_PIXELS; the median itself is robust:
# on 400 HAM10000 images, thresholds 0 and 10 bin every image alike and 20 moves one.
MIN_SKIN_LIGHTNESS = 10.0
# Fewer skin pixels than this (a 14x14 patch, 0.7% of a 200x150 image) gives NaN, the "unknown" bin.
MIN_SKIN_PIXELS = 200

UNKNOWN = "unknown"
# Del Bino et al. (Br. J. Dermatol. 2013 / Pigment Cell Res. 2006). A boundary value belongs to the
# darker bin: 55 is "light", 41 "intermediate", 28 "tan", 10 "brown and dark". Their "brown"
# (-30, 10] and "dark" <= -30 are merged: HAM10000 has 65 of 8,802 images at ITA <= 10.
ITA_BINS: tuple[tuple[float, str], ...] = (
    (55.0, "very light"),
    (41.0, "light"),
    (28.0, "intermediate"),
    (10.0, "tan"),
    (-math.inf, "brown and dark"),
)
ITA_BIN_ORDER = (*(name for _, name in ITA_BINS), UNKNOWN)
SKIN_TONE = "skin tone (ITA)"
# Same bands as training/model_card.py's AGE_BANDS; repeated here (not imported) so this module does
# not pull in matplotlib and a private helper. tests/training/test_fairness.py checks they agree.
AGE_BANDS = ((0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75+"))
FIXED_ORDER = {SKIN_TONE: ITA_BIN_ORDER, "age band": (*(b for _, _, b in AGE_BANDS), UNKNOWN)}
SMALL_GROUP = 20


def _srgb_decode(c: NDArray[np.float64]) -> NDArray[np.float64]:
    """sRGB transfer function inverse: encoded [0, 1] -> linear [0, 1]."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


# uint8 -> linear lookup: 8 bits have only 256 values, and the power function is the slow part.
_LINEAR_LUT = _srgb_decode(np.arange(256, dtype=np.float64) / 255.0)


def srgb_to_lab(rgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    """CIE L*a*b* (D65) of uint8 sRGB pixels, shape (..., 3) -> (..., 3)."""
    linear = _LINEAR_LUT[np.asarray(rgb, dtype=np.uint8)]
    xyz = linear @ SRGB_TO_XYZ.T / D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta**3, np.cbrt(xyz), xyz / (3.0 * delta**2) + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def dilate(mask: NDArray[np.bool_], size: int = DILATION_SIZE) -> NDArray[np.bool_]:
    """Binary dilation of a HxW mask by a size x size square (size odd), as two 1-D max passes."""
    r = size // 2
    out = np.asarray(mask, dtype=bool)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        padded = np.pad(out, pad)
        n = out.shape[axis]
        out = np.logical_or.reduce([padded.take(range(k, k + n), axis=axis) for k in range(size)])
    return out


def ita_from_lab(lightness: float, b: float) -> float:
    """ITA in degrees: atan2(L* - 50, b*), i.e. arctan((L* - 50) / b*) for b* > 0, clipped to [-90, 90].

    b* <= 0 (no yellow: a pink or blue cast of the dermatoscope; 36% of HAM10000's images)
    takes the b* -> 0+ limit, +90 or -90 by the sign of L* - 50, so the angle stays monotone in
    lightness instead of jumping to the opposite end of the scale as plain arctan would.
    """
    return float(np.clip(np.degrees(np.arctan2(lightness - 50.0, b)), -90.0, 90.0))


def image_ita(rgb: NDArray[np.uint8], mask: NDArray[np.bool_]) -> float:
    """ITA of an image's non-lesion skin, from the MEDIAN L* and MEDIAN b* of its skin pixels.

    Skin = outside the lesion mask dilated by DILATION_SIZE // 2 px, and L* >= MIN_SKIN_LIGHTNESS
    (drops the scope's dark vignette, shadows and hair). NaN when fewer than MIN_SKIN_PIXELS remain.
    """
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {mask.shape} differ in size")
    lab = srgb_to_lab(rgb[~dilate(mask)])
    skin = lab[lab[:, 0] >= MIN_SKIN_LIGHTNESS]
    if len(skin) < MIN_SKIN_PIXELS:
        return float("nan")
    return ita_from_lab(float(np.median(skin[:, 0])), float(np.median(skin[:, 2])))


def ita_bin(ita: float) -> str:
    """Del Bino skin-tone bin of an ITA in degrees; NaN is "unknown"."""
    if math.isnan(ita):
        return UNKNOWN
    return next(name for lower, name in ITA_BINS if ita > lower)


def read_mask(path: Path) -> NDArray[np.bool_]:
    """A lesion mask PNG as a HxW bool array (white = lesion)."""
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 127


def _cache_key(image_ids: Sequence[str]) -> str:
    method = f"{DILATION_SIZE}|{MIN_SKIN_LIGHTNESS}|{MIN_SKIN_PIXELS}|clip90"
    return hashlib.sha256("\n".join([method, *image_ids]).encode()).hexdigest()[:16]


def split_ita(
    samples: Sequence[Sample], data_root: Path, cache_dir: Path | None = None
) -> NDArray[np.float64]:
    """ITA per sample, in sample order, with masks from `<data_root>/ham10000/masks/<image_id>.png`.

    With `cache_dir`, the result is kept in `ita-<key>.npz`, the key hashing the image ids and the
    method constants (without it: ~8 ms of CPU an image, ~10 s for the 1,298 test images).
    """
    ids = [s.meta["image_id"] for s in samples]
    cache = cache_dir / f"ita-{_cache_key(ids)}.npz" if cache_dir is not None else None
    if cache is not None and cache.exists():
        with np.load(cache) as stored:
            if list(stored["image_ids"]) == ids:
                return np.asarray(stored["ita"], dtype=np.float64)
    masks = Path(data_root) / "ham10000" / "masks"
    ita = np.array(
        [
            image_ita(read_rgb(s.path), read_mask(masks / f"{i}.png"))
            for s, i in zip(samples, ids, strict=True)
        ]
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, image_ids=np.asarray(ids), ita=ita)
    return ita


def ita_distribution(data_root: Path) -> dict[str, dict[str, int]]:
    """Images per ITA bin in each HAM10000 split (train/val/test), bins in ITA_BIN_ORDER."""
    _, splits = load_ham10000(Path(data_root) / "ham10000")
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        bins = [ita_bin(v) for v in split_ita(splits[split].samples, data_root)]
        counts[split] = {name: bins.count(name) for name in ITA_BIN_ORDER}
    return counts


def age_band(raw: str | None) -> str:
    """Age band of a metadata age string ("" or None is "unknown"); the model card's AGE_BANDS."""
    if not raw:
        return UNKNOWN
    age = float(raw)
    return next(label for lo, hi, label in AGE_BANDS if lo <= age < hi)


def subgroup_values(samples: Sequence[Sample], ita: NDArray[np.floating]) -> dict[str, list[str]]:
    """The groupings fairness_tables takes: skin tone (ITA bin), sex, age band, body site."""
    return {
        SKIN_TONE: [ita_bin(float(v)) for v in ita],
        "sex": [s.meta.get("sex") or UNKNOWN for s in samples],
        "age band": [age_band(s.meta.get("age")) for s in samples],
        "body site": [s.meta.get("localization") or UNKNOWN for s in samples],
    }


def _ordered(name: str, values: list[str]) -> list[str]:
    present = set(values)
    if name in FIXED_ORDER:
        order = [g for g in FIXED_ORDER[name] if g in present]
        return order + sorted(present - set(order))
    # Largest group first, "unknown" last, like the model card's subgroup tables.
    return sorted(present, key=lambda g: (g == UNKNOWN, -values.count(g), g))


def fairness_tables(
    probs: NDArray[np.floating],
    labels: NDArray[np.int64],
    malignant_indices: Sequence[int],
    urgent_threshold: float,
    rejected: NDArray[np.bool_],
    groups: dict[str, list[str]],
) -> dict[str, list[dict[str, Any]]]:
    """Per group value: n, malignant n, urgent sensitivity, balanced accuracy, accuracy, ECE and the
    OOD rejection rate, over all images of the group (rejected ones included); `small` when n < 20."""
    probs, labels, rejected = np.asarray(probs), np.asarray(labels), np.asarray(rejected, dtype=bool)
    preds = probs.argmax(axis=1)
    mal = list(malignant_indices)
    urgent = probs[:, mal].sum(axis=1) >= urgent_threshold
    is_mal = np.isin(labels, mal)
    tables: dict[str, list[dict[str, Any]]] = {}
    for name, values in groups.items():
        if len(values) != len(labels):
            raise ValueError(f"grouping {name!r} has {len(values)} values for {len(labels)} images")
        arr = np.asarray(values)
        rows = []
        for group in _ordered(name, list(values)):
            m = arr == group
            m_mal = m & is_mal
            rows.append(
                {
                    "group": group,
                    "n": int(m.sum()),
                    "n_malignant": int(m_mal.sum()),
                    "urgent_sensitivity": float(urgent[m_mal].mean()) if m_mal.any() else float("nan"),
                    "balanced_accuracy": balanced_accuracy(labels[m], preds[m], probs.shape[1]),
                    "accuracy": float((preds[m] == labels[m]).mean()),
                    "ece": expected_calibration_error(probs[m], labels[m]),
                    "ood_rejected": float(rejected[m].mean()),
                    "small": bool(m.sum() < SMALL_GROUP),
                }
            )
        tables[name] = rows
    return tables


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def fairness_section_lines(tables: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The model card's "Fairness by skin tone and subgroup" section, one table per grouping."""
    bins = ", ".join(
        f"{name} > {lower:g}°" if i == 0 else f"{name} {lower:g}-{ITA_BINS[i - 1][0]:g}°"
        for i, (lower, name) in enumerate(ITA_BINS[:-1])
    )
    lines = [
        "## Fairness by skin tone and subgroup",
        "",
        "Skin tone is estimated per image by the Individual Typology Angle,"
        " ITA = atan2(L* - 50, b*) in degrees (arctan((L* - 50) / b*) for b* > 0), from the **median** L*"
        " and **median** b* (CIE L*a*b*, D65) of the image's non-lesion skin: the pixels outside the"
        f" HAM10000 lesion mask dilated by {DILATION_SIZE // 2} px and with L* >= {MIN_SKIN_LIGHTNESS:g}"
        " (the scope's dark vignette, shadows and hair are not skin). Images with b* <= 0 get ±90°;"
        " images with too little visible skin are `unknown`."
        f" Bins (Del Bino et al.): {bins}, {ITA_BINS[-1][1]} <= {ITA_BINS[-2][0]:g}°; a boundary value"
        " belongs to the darker bin.",
        "",
        "**Caveat.** ITA from a dermoscopic image under unknown, uncalibrated illumination is a proxy for"
        " skin tone, not a Fitzpatrick type: the dermatoscope's light and white balance shift L* and b*"
        " (many HAM10000 images have a pink or blue cast, b* <= 0). HAM10000 comes mostly from"
        " light-skinned patients, so the darker bins hold few images and their numbers are not evidence"
        " of equal performance on darker skin.",
        "",
        "Metrics are on the `test` split over all images of a group; urgent sensitivity = share of"
        " malignant images with P(malignant) at or above the urgent threshold; ECE is top-label with 15"
        " bins; OOD rejected = share of the group the OOD gate turns away."
        f" Groups with n < {SMALL_GROUP} show counts only.",
        "",
    ]
    for name, rows in tables.items():
        lines += [
            f"### By {name}",
            "| group | n | malignant n | urgent sensitivity | balanced acc | ECE | OOD rejected |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["small"]:
                cells = [f"n<{SMALL_GROUP}"] * 4
            else:
                keys = ("urgent_sensitivity", "balanced_accuracy", "ece", "ood_rejected")
                cells = [_fmt(float(r[k])) for k in keys]
            lines.append(f"| {r['group']} | {r['n']} | {r['n_malignant']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
