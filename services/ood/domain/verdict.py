"""One request, checked against the loaded bundle, scored and decided."""

from __future__ import annotations

import math

import numpy as np
from pydantic import ValidationError

from contracts.bundle import BundleManifest
from contracts.ood import OodScoreRequest, OodScoreResponse
from contracts.ood_extra import QualityMeasurements
from services.ood.domain.decision import QualityThresholds, decide
from services.ood.domain.errors import BadEmbeddingError, BadLogitsError, BadQualityError, ModelMismatchError
from services.ood.domain.scoring import score_logits


def _check(request: OodScoreRequest, manifest: BundleManifest) -> None:
    if request.model_sha256 != manifest.onnx_sha256:
        raise ModelMismatchError(
            "the request was scored with a different model than this service serves",
            {"expected": manifest.onnx_sha256, "received": request.model_sha256},
        )
    classes = len(manifest.classes)
    if len(request.logits) != classes:
        raise BadLogitsError(
            f"expected {classes} logits, one per class",
            {"expected": classes, "received": len(request.logits)},
        )
    if not all(math.isfinite(v) for v in request.logits):
        raise BadLogitsError("logits must be finite numbers")
    dim = manifest.io.embedding_dim
    if len(request.embedding) != dim:
        raise BadEmbeddingError(
            f"expected an embedding of length {dim}", {"expected": dim, "received": len(request.embedding)}
        )
    if not all(math.isfinite(v) for v in request.embedding):
        raise BadEmbeddingError("embedding values must be finite numbers")


def _quality(request: OodScoreRequest) -> QualityMeasurements | None:
    if request.quality is None:
        return None
    try:
        return QualityMeasurements.model_validate(request.quality)
    except ValidationError as exc:
        details = [{"loc": list(e["loc"]), "type": e["type"]} for e in exc.errors()]
        raise BadQualityError("quality measurements are incomplete or out of range", details) from exc


def evaluate(
    request: OodScoreRequest, manifest: BundleManifest, limits: QualityThresholds
) -> OodScoreResponse:
    """Check the request fits the bundle, score its logits and decide."""
    _check(request, manifest)
    quality = _quality(request)
    scores = score_logits(np.asarray(request.logits, dtype=np.float64), manifest.temperature)
    return decide(scores, quality, manifest.ood, limits)
