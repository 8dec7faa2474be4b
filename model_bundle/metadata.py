"""Clinical metadata (age, sex, body site) -> the model's `metadata` input vector.

Training and serving both encode through `encode_metadata`, with the vocabulary the bundle
records, so a request's "back" or "54" means what it meant in training. Any field may be absent;
absence is encoded explicitly (a `*_missing` flag), which is also what training's random field
dropping produces.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from contracts.bundle import MetadataEncoding


def normalise_site(value: str | None, spec: MetadataEncoding) -> str | None:
    """A body-site string as a vocabulary value, or None when it is absent or unknown."""
    if value is None:
        return None
    key = " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())
    key = spec.site_aliases.get(key, key)
    return key if key in spec.site_values else None


def encode_metadata(
    spec: MetadataEncoding, age: float | None = None, sex: str | None = None, site: str | None = None
) -> NDArray[np.float32]:
    """The (spec.dim,) float32 vector; values outside the vocabulary count as missing."""
    vector = np.zeros(spec.dim, dtype=np.float32)
    if age is None or not np.isfinite(age) or age < 0:
        vector[1] = 1.0
    else:
        vector[0] = float(age) / spec.age_scale
    offset = 2
    sex_key = sex.strip().lower() if sex else None
    if sex_key in spec.sex_values:
        vector[offset + spec.sex_values.index(sex_key)] = 1.0
    else:
        vector[offset + len(spec.sex_values)] = 1.0
    offset += len(spec.sex_values) + 1
    site_key = normalise_site(site, spec)
    if site_key is not None:
        vector[offset + spec.site_values.index(site_key)] = 1.0
    else:
        vector[offset + len(spec.site_values)] = 1.0
    return vector


def missing_metadata(spec: MetadataEncoding) -> NDArray[np.float32]:
    """The vector of a request that carries no metadata at all."""
    return encode_metadata(spec)
