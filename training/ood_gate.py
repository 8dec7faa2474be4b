"""The fleet's accept/reject decision for an image, reproduced offline for evaluations.

Serving decides in two places: the worker measures image quality and the OOD service gates on it
first, then applies the bundle's OOD rule to the network's outputs. Evaluations (`make evaluate`,
`make eval-shift`) must count exactly what the fleet would turn away, so they call the same
domain functions (`services.inference.domain.quality`, `services.ood.domain.decision`) and the
same score formulas (`training.ood`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from model_bundle.predictor import Predictor
from services.inference.domain.quality import measure_quality
from services.ood.domain.decision import QualityThresholds, quality_reasons
from training.ood import OodStats, all_scores, rejects


class OodGate:
    """The served accept/reject decision, offline: quality gate first, then the OOD rule."""

    def __init__(self, predictor: Predictor) -> None:
        self.manifest = predictor.manifest
        det = self.manifest.ood_detector
        self.stats = OodStats.load(predictor.bundle_dir / det.stats_file) if det else None
        # Only the rule's scores decide, as services/ood/domain/decision.detector_rule does.
        self.thresholds: dict[str, float] | None = (
            {name: det.thresholds[name] for name in det.rule} if det else None
        )
        self.knn_k = det.knn_k if det else 1
        self.quality_limits = QualityThresholds()

    def rule(self) -> str:
        """The rule in force, in words."""
        if self.thresholds is not None:
            return "quality gate, then ood_detector: " + " OR ".join(
                f"{n} > {t:.4g}" for n, t in self.thresholds.items()
            )
        seed = self.manifest.ood
        return f"quality gate, then seed: msp < {seed.msp_min:.4g} OR entropy > {seed.entropy_max:.4g}"

    def quality_ok(self, images: Sequence[Image.Image]) -> NDArray[np.bool_]:
        """True where the image passes the image-quality gate."""
        return np.asarray([not quality_reasons(measure_quality(i), self.quality_limits) for i in images])

    def model_ok(self, logits: NDArray[np.float32], embeddings: NDArray[np.float32]) -> NDArray[np.bool_]:
        """True where the OOD rule accepts the network's outputs."""
        m = self.manifest
        scores = all_scores(logits, embeddings, m.temperature, self.stats, self.knn_k)
        if self.thresholds is not None:
            return ~rejects(scores, self.thresholds)
        msp = 1.0 - scores["msp"]  # training.ood orients msp as 1 - max probability
        out: NDArray[np.bool_] = ~((msp < m.ood.msp_min) | (scores["entropy"] > m.ood.entropy_max))
        return out
