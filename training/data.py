"""Datasets: the HAM10000 layout (metadata.csv + images/) and a plain class-per-folder layout."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from contracts.bundle import MetadataEncoding

HAM_CLASSES: tuple[tuple[str, str, bool], ...] = (
    ("akiec", "Actinic keratosis / intraepithelial carcinoma", True),
    ("bcc", "Basal cell carcinoma", True),
    ("bkl", "Benign keratosis-like lesion", False),
    ("df", "Dermatofibroma", False),
    ("mel", "Melanoma", True),
    ("nv", "Melanocytic nevus", False),
    ("vasc", "Vascular lesion", False),
)
SPLITS = ("train", "val", "test")
# HAM10000's `localization` values (its "unknown" is encoded as missing). Requests name sites in
# their own words; the aliases map common spellings onto this vocabulary.
HAM_SITES = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "upper extremity",
)
SITE_ALIASES = {
    "arm": "upper extremity",
    "upper limb": "upper extremity",
    "forearm": "upper extremity",
    "leg": "lower extremity",
    "lower limb": "lower extremity",
    "thigh": "lower extremity",
    "head": "face",
    "cheek": "face",
    "nose": "face",
    "forehead": "face",
    "palm": "acral",
    "sole": "acral",
    "belly": "abdomen",
    "torso": "trunk",
    "thorax": "chest",
    "breast": "chest",
    "genitals": "genital",
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Sample:
    """One labelled image; `group` keeps images of one lesion together across splits."""

    path: Path
    label: int
    group: str
    meta: dict[str, str] = field(default_factory=dict)


@dataclass
class SplitData:
    """The samples of one split, and their decoded pixels once `load_pixels` ran."""

    samples: list[Sample]
    pixels: list[NDArray[np.uint8]] = field(default_factory=list)

    @property
    def labels(self) -> NDArray[np.int64]:
        """Integer labels in sample order."""
        return np.asarray([s.label for s in self.samples], dtype=np.int64)

    def load_pixels(self) -> None:
        """Decode every image once into memory (HAM10000 at 200x150 is ~0.8 GB in all)."""
        self.pixels = [read_rgb(s.path) for s in self.samples]


def metadata_encoding() -> MetadataEncoding:
    """The metadata vocabulary of a HAM10000-trained model (ages scaled by 1/100)."""
    return MetadataEncoding(
        age_scale=100.0, sex_values=("male", "female"), site_values=HAM_SITES, site_aliases=SITE_ALIASES
    )


def sample_metadata(sample: Sample) -> tuple[float | None, str | None, str | None]:
    """(age, sex, body site) of a sample, None where the metadata says empty or unknown."""
    raw_age = sample.meta.get("age", "")
    age = float(raw_age) if raw_age not in ("", None) else None
    sex = sample.meta.get("sex") or None
    site = sample.meta.get("localization") or None
    return age, None if sex == "unknown" else sex, None if site == "unknown" else site


def read_rgb(path: Path) -> NDArray[np.uint8]:
    """Decode an image file to an HxWx3 uint8 RGB array."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _limit(samples: list[Sample], limit: int, num_classes: int) -> list[Sample]:
    """Keep `limit` samples, round-robin over classes so every class is represented."""
    if limit <= 0 or len(samples) <= limit:
        return samples
    by_class: list[list[Sample]] = [[s for s in samples if s.label == c] for c in range(num_classes)]
    kept: list[Sample] = []
    while len(kept) < limit and any(by_class):
        for bucket in by_class:
            if bucket and len(kept) < limit:
                kept.append(bucket.pop(0))
    return kept


def load_ham10000(root: Path, limit_per_split: int = 0) -> tuple[list[str], dict[str, SplitData]]:
    """Read `metadata.csv` and use its lesion-grouped `split` column as given."""
    codes = [c for c, _, _ in HAM_CLASSES]
    index = {c: i for i, c in enumerate(codes)}
    by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    with (root / "metadata.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            sample = Sample(
                path=root / "images" / f"{row['image_id']}.jpg",
                label=index[row["dx"]],
                group=row["lesion_id"],
                meta={k: row[k] for k in ("image_id", "age", "sex", "localization", "dx_type")},
            )
            by_split[row["split"]].append(sample)
    _assert_groups_disjoint(by_split)
    return codes, {s: SplitData(_limit(v, limit_per_split, len(codes))) for s, v in by_split.items()}


def load_folders(root: Path, limit_per_split: int = 0) -> tuple[list[str], dict[str, SplitData]]:
    """`root/<split>/<class>/<image>`: a clinic's own data. Each image is its own group unless a
    `<lesion>__<n>.jpg` naming puts several under one lesion id."""
    class_names = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not class_names:
        raise ValueError(f"no class folders under {root / 'train'}")
    index = {c: i for i, c in enumerate(class_names)}
    splits: dict[str, SplitData] = {}
    for split in SPLITS:
        samples: list[Sample] = []
        split_dir = root / split
        for class_dir in sorted(split_dir.iterdir()) if split_dir.is_dir() else []:
            if class_dir.name not in index:
                raise ValueError(f"class {class_dir.name!r} in {split} is not in train")
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    group = path.stem.split("__")[0]
                    samples.append(Sample(path, index[class_dir.name], f"{class_dir.name}/{group}"))
        splits[split] = SplitData(_limit(samples, limit_per_split, len(class_names)))
    _assert_groups_disjoint({k: v.samples for k, v in splits.items()})
    return class_names, splits


def _assert_groups_disjoint(by_split: dict[str, list[Sample]]) -> None:
    seen: dict[str, str] = {}
    for split, samples in by_split.items():
        for s in samples:
            if seen.setdefault(s.group, split) != split:
                raise ValueError(f"lesion {s.group} appears in both {seen[s.group]} and {split}")


def grouped_kfold(samples: Sequence[Sample], folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Lesion-grouped, label-stratified k-fold: (train indices, held-out indices) per fold.

    Groups are dealt class by class, in shuffled order, to the fold holding fewest images of
    that class, so every fold gets a similar class mix and no lesion straddles two folds.
    """
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        groups.setdefault(s.group, []).append(i)
    by_label: dict[int, list[str]] = {}
    for g, members in groups.items():
        by_label.setdefault(samples[members[0]].label, []).append(g)
    fold_of: dict[str, int] = {}
    sizes = [0] * folds
    for label in sorted(by_label):
        names = by_label[label]
        rng.shuffle(names)
        label_sizes = [0] * folds
        for g in names:
            target = min(range(folds), key=lambda f: (label_sizes[f], sizes[f]))
            fold_of[g] = target
            label_sizes[target] += len(groups[g])
            sizes[target] += len(groups[g])
    result = []
    for f in range(folds):
        held = [i for g, members in groups.items() if fold_of[g] == f for i in members]
        held_set = set(held)
        result.append(([i for i in range(len(samples)) if i not in held_set], sorted(held)))
    return result
