"""A task's clinical metadata -> the model's context, and which fields the model actually used.

A format-2 bundle may fuse age, sex and body site (`manifest.metadata`); an image-only bundle
ignores them. A field counts as used only when the bundle fuses metadata, the request gave it,
and the bundle's encoding recognised it: a body site or sex outside the bundle's vocabulary is
encoded as missing, exactly as if the request had not given it, so it is reported as not used.
"""

from __future__ import annotations

import numpy as np

from contracts.bundle import MetadataEncoding
from contracts.jobs import ClinicalField, ClinicalMetadata
from model_bundle.metadata import encode_metadata, missing_metadata
from model_bundle.predictor import ClinicalContext


def model_context(clinical: ClinicalMetadata | None) -> ClinicalContext | None:
    """The predictor's view of the task's clinical metadata; None when the task has none."""
    if clinical is None:
        return None
    age = float(clinical.age) if clinical.age is not None else None
    return ClinicalContext(age=age, sex=clinical.sex, body_site=clinical.body_site)


def metadata_used(
    spec: MetadataEncoding | None, clinical: ClinicalMetadata | None
) -> list[ClinicalField] | None:
    """The fields the model fused, in the order age, sex, body_site; None for an image-only bundle.

    Each field is encoded alone with the bundle's own encoder and compared with the all-missing
    vector, so "recognised" means exactly what the model was given, never a second copy of the
    vocabulary rules (aliases, case, spacing)."""
    if spec is None:
        return None
    if clinical is None:
        return []
    unknown = missing_metadata(spec)
    encoded: dict[ClinicalField, np.ndarray | None] = {
        "age": encode_metadata(spec, age=float(clinical.age)) if clinical.age is not None else None,
        "sex": encode_metadata(spec, sex=clinical.sex) if clinical.sex is not None else None,
        "body_site": encode_metadata(spec, site=clinical.body_site)
        if clinical.body_site is not None
        else None,
    }
    return [
        name for name, vector in encoded.items() if vector is not None and not np.array_equal(vector, unknown)
    ]
