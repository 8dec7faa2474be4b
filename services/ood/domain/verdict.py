"""One request, checked against the loaded bundle, scored and decided."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from contracts.bundle import BundleManifest, OodDetector
from contracts.ood import OodScoreRequest, OodScoreResponse
from contracts.ood_extra import QualityMeasurements
from services.ood.domain.decision import DetectorRule, QualityThresholds, decide
from services.ood.domain.errors import BadEmbeddingError, BadLogitsError, BadQualityError, ModelMismatchError
from services.ood.domain.scoring import DetectorStats, score_output
from services.ood.domain.strictness import rule_at, tenant_rules


@dataclass(frozen=True)
class Detector:
    """The bundle's fitted OOD detector, ready to serve: its statistics, its rule at the bundle's
    target acceptance, and each configured tenant's rule at that tenant's acceptance."""

    stats: DetectorStats
    knn_k: int
    default: DetectorRule
    tenants: Mapping[str, DetectorRule] = field(default_factory=dict)

    def rule_for(self, tenant_id: str | None) -> DetectorRule:
        """The tenant's rule, or the bundle's default for an unconfigured (or absent) tenant."""
        if tenant_id is None:
            return self.default
        return self.tenants.get(tenant_id, self.default)


def build_detector(
    spec: OodDetector, stats: DetectorStats, tenant_acceptance: Mapping[str, float] | None = None
) -> Detector:
    """Resolve every rule once; UnknownAcceptanceError for a level the bundle has no thresholds for."""
    return Detector(
        stats=stats,
        knn_k=spec.knn_k,
        default=rule_at(spec, spec.target_acceptance),
        tenants=tenant_rules(spec, tenant_acceptance or {}),
    )


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
    request: OodScoreRequest,
    manifest: BundleManifest,
    limits: QualityThresholds,
    detector: Detector | None = None,
) -> OodScoreResponse:
    """Check the request fits the bundle, score it and decide: with a `detector` by its rule at
    the request's tenant's acceptance, else by the bundle's seed dual criterion."""
    _check(request, manifest)
    quality = _quality(request)
    scores = score_output(
        np.asarray(request.logits, dtype=np.float64),
        np.asarray(request.embedding, dtype=np.float64),
        manifest.temperature,
        detector.stats if detector is not None else None,
        detector.knn_k if detector is not None else 1,
    )
    rule = detector.rule_for(request.tenant_id) if detector is not None else None
    return decide(scores, quality, manifest.ood, limits, rule)
