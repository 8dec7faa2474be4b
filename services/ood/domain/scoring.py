"""Out-of-distribution scores from one image's raw logits and embedding (pure numpy).

Logit scores use the bundle's temperature, so MSP and entropy are read off the same calibrated
probabilities the worker reports, and the thresholds in bundle.json must be fitted on those too.
Embedding scores use the statistics of the bundle's `ood_detector` (`DetectorStats`), fitted on
the train split's embeddings (and, for `oe`, the outlier-exposure head trained with the network).
The formulas are model_bundle.ood_scores', the ones training fits and measures the detector
with; this module applies them to one image and names the results.

Orientation: `Scores.msp` is the max softmax probability itself (low = unsure), as every response
has always reported it; every other score is oriented so that higher means more OOD. The
detector's "msp" score is 1 - msp (`Scores.oriented`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from model_bundle import ood_scores as formulas

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class DetectorStats:
    """The contents of a bundle's `ood_stats.npz`: class means (K x D), the precision matrix
    (D x D, inverse shared covariance) and the L2-normalised kNN reference embeddings (M x D);
    from format-2 bundles whose detector uses `oe`, also the outlier-exposure head's weight (D,)
    and bias (1,)."""

    class_means: FloatArray
    precision: FloatArray
    knn_reference: FloatArray
    oe_weight: FloatArray | None = None
    oe_bias: FloatArray | None = None
    # mu'P mu per class, computed once here rather than in every request (`formulas.mean_terms`).
    class_terms: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_terms", formulas.mean_terms(self.class_means, self.precision))


@dataclass(frozen=True)
class Scores:
    """Every score of one output; the embedding scores are None without detector statistics."""

    msp: float
    entropy: float
    energy: float
    mahalanobis: float | None = None
    knn: float | None = None
    oe: float | None = None

    def as_dict(self) -> dict[str, float]:
        """Scores as they appear in OodScoreResponse.scores (msp is the max probability)."""
        out = {"msp": self.msp, "entropy": self.entropy, "energy": self.energy}
        if self.mahalanobis is not None:
            out["mahalanobis"] = self.mahalanobis
        if self.knn is not None:
            out["knn"] = self.knn
        if self.oe is not None:
            out["oe"] = self.oe
        return out

    def oriented(self) -> dict[str, float]:
        """Scores as the OodDetector names them, each higher = more OOD (msp -> 1 - msp)."""
        return self.as_dict() | {"msp": 1.0 - self.msp}


def energy_score(logits: NDArray[np.floating], temperature: float) -> float:
    """Energy (Liu et al. 2020): -T * logsumexp(logits / T); lower means more in-distribution."""
    return float(formulas.energy_score(logits, temperature)[0])


def mahalanobis_score(
    embedding: NDArray[np.floating],
    class_means: NDArray[np.floating],
    precision: NDArray[np.floating],
    class_terms: NDArray[np.floating] | None = None,
) -> float:
    """min over classes c of (e - mu_c)^T P (e - mu_c) (Lee et al. 2018); 0 at a class mean."""
    return float(formulas.mahalanobis_score(embedding, class_means, precision, class_terms)[0])


def knn_score(embedding: NDArray[np.floating], reference: NDArray[np.floating], k: int) -> float:
    """1 - cosine similarity of e to its k-th nearest row of the L2-normalised `reference`
    (Sun et al. 2022): 0 when k reference rows point the same way as e, up to 2."""
    return float(formulas.knn_score(embedding, reference, k)[0])


def oe_score(
    embedding: NDArray[np.floating], weight: NDArray[np.floating], bias: NDArray[np.floating]
) -> float:
    """The outlier-exposure head's logit w . e + b: higher = less like a dermoscopic image."""
    return float(formulas.oe_score(embedding, weight, bias)[0])


def score_logits(logits: NDArray[np.floating], temperature: float) -> Scores:
    """The logit scores for one image's raw logits at the bundle's temperature (MSP reported as
    the max probability itself, low = unsure, 1/K at worst)."""
    return Scores(
        msp=1.0 - float(formulas.msp_score(logits, temperature)[0]),
        entropy=float(formulas.entropy_score(logits, temperature)[0]),
        energy=energy_score(logits, temperature),
    )


def score_output(
    logits: NDArray[np.floating],
    embedding: NDArray[np.floating],
    temperature: float,
    stats: DetectorStats | None,
    knn_k: int,
) -> Scores:
    """Every score for one image: the logit scores, plus the embedding scores when `stats` (and
    `oe` when the statistics hold the outlier-exposure head)."""
    scores = score_logits(logits, temperature)
    if stats is None:
        return scores
    oe = None
    if stats.oe_weight is not None and stats.oe_bias is not None:
        oe = oe_score(embedding, stats.oe_weight, stats.oe_bias)
    return Scores(
        msp=scores.msp,
        entropy=scores.entropy,
        energy=scores.energy,
        mahalanobis=mahalanobis_score(embedding, stats.class_means, stats.precision, stats.class_terms),
        knn=knn_score(embedding, stats.knn_reference, knn_k),
        oe=oe,
    )
