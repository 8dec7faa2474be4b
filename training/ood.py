"""The OOD detector's statistics and decision rule (pure numpy; sklearn only to fit).

Every score is oriented so that HIGHER means MORE out-of-distribution, as the `OodDetector`
contract (contracts/bundle.py) states. The formulas are model_bundle.ood_scores', shared with
the OOD service:

- msp:         1 - max_c softmax(logits / T)_c                      (T = bundle temperature)
- entropy:     -sum_c p_c log p_c / log K,  p = softmax(logits / T)  (in [0, 1])
- energy:      -T * logsumexp(logits / T)
- mahalanobis: min_c (e - mu_c)^T P (e - mu_c), P = inverse of the shared (Ledoit-Wolf shrunk)
               covariance of the train embeddings around their class means
- knn:         1 - cosine similarity of e to its k-th nearest neighbour among the L2-normalised
               train embeddings in `knn_reference`
- oe:          w . e + b, the logit of the outlier-exposure head (dermoscopy vs not) trained with
               the network on generated outliers (training/outliers.py); bundles from 2.0

A rule is a set of scores; an image is rejected when ANY of them exceeds its threshold.
Thresholds come from one shared quantile level q of each score's in-distribution validation
distribution, with q the largest level at which the rule still accepts the target share jointly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# The formulas live once in model_bundle.ood_scores (the OOD service scores with the same);
# re-exported here for the fitting and evaluation code.
from model_bundle.ood_scores import energy_score as energy_score
from model_bundle.ood_scores import entropy_score as entropy_score
from model_bundle.ood_scores import knn_score as knn_score
from model_bundle.ood_scores import l2_normalise as l2_normalise
from model_bundle.ood_scores import mahalanobis_score as mahalanobis_score
from model_bundle.ood_scores import msp_score as msp_score
from model_bundle.ood_scores import oe_score as oe_score

SCORE_NAMES: tuple[str, ...] = ("msp", "entropy", "energy", "mahalanobis", "knn", "oe")
EMBEDDING_SCORES = frozenset({"mahalanobis", "knn", "oe"})

FloatArray = NDArray[np.float64]


def fit_gaussian(
    embeddings: NDArray[np.floating], labels: NDArray[np.integer], num_classes: int
) -> tuple[NDArray[np.float32], NDArray[np.float32], float]:
    """(class means K x D, precision D x D, Ledoit-Wolf shrinkage) of a shared-covariance model.

    A class absent from `labels` gets the overall mean, so the K rows always match the logits."""
    from sklearn.covariance import LedoitWolf  # training-time only; serving reads the matrices

    e = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    overall = e.mean(axis=0)
    means = np.stack([e[y == c].mean(axis=0) if (y == c).any() else overall for c in range(num_classes)])
    centred = e - means[y]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    precision = np.linalg.inv(lw.covariance_)
    precision = (precision + precision.T) / 2.0  # exact symmetry; inv leaves ~1e-12 asymmetry
    return means.astype(np.float32), precision.astype(np.float32), float(lw.shrinkage_)


def knn_reference(embeddings: NDArray[np.floating], max_size: int, seed: int = 0) -> NDArray[np.float32]:
    """L2-normalised train embeddings, a seeded random subsample of at most `max_size` rows."""
    e = np.asarray(embeddings)
    if len(e) > max_size:
        keep = np.sort(np.random.default_rng(seed).choice(len(e), size=max_size, replace=False))
        e = e[keep]
    return l2_normalise(e).astype(np.float32)


@dataclass(frozen=True)
class OodStats:
    """The contents of `ood_stats.npz` (all float32): the Gaussian and kNN statistics fitted on
    the train split, and (2.0 bundles) the outlier-exposure head trained with the network."""

    class_means: NDArray[np.float32]
    precision: NDArray[np.float32]
    knn_reference: NDArray[np.float32]
    oe_weight: NDArray[np.float32] | None = None
    oe_bias: NDArray[np.float32] | None = None

    def save(self, path: Path) -> None:
        """Write the npz (uncompressed: float embeddings barely compress, loading stays fast)."""
        arrays = {
            "class_means": self.class_means.astype(np.float32),
            "precision": self.precision.astype(np.float32),
            "knn_reference": self.knn_reference.astype(np.float32),
        }
        if self.oe_weight is not None and self.oe_bias is not None:
            arrays["oe_weight"] = self.oe_weight.astype(np.float32).reshape(-1)
            arrays["oe_bias"] = self.oe_bias.astype(np.float32).reshape(1)
        np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub wants positional arrays

    @classmethod
    def load(cls, path: Path) -> OodStats:
        """Read an `ood_stats.npz`."""
        with np.load(path) as npz:
            oe = (npz["oe_weight"], npz["oe_bias"]) if "oe_weight" in npz.files else (None, None)
            return cls(npz["class_means"], npz["precision"], npz["knn_reference"], *oe)


def all_scores(
    logits: NDArray[np.floating],
    embeddings: NDArray[np.floating],
    temperature: float,
    stats: OodStats | None,
    knn_k: int,
) -> dict[str, FloatArray]:
    """Every score for a batch; the embedding scores only when `stats` is given."""
    scores = {
        "msp": msp_score(logits, temperature),
        "entropy": entropy_score(logits, temperature),
        "energy": energy_score(logits, temperature),
    }
    if stats is not None:
        scores["mahalanobis"] = mahalanobis_score(embeddings, stats.class_means, stats.precision)
        scores["knn"] = knn_score(embeddings, stats.knn_reference, knn_k)
        if stats.oe_weight is not None and stats.oe_bias is not None:
            scores["oe"] = oe_score(embeddings, stats.oe_weight, stats.oe_bias)
    return scores


def rejects(scores: Mapping[str, NDArray[np.floating]], thresholds: Mapping[str, float]) -> NDArray[np.bool_]:
    """True where ANY score named in `thresholds` exceeds its threshold (the contract's rule)."""
    names = list(thresholds)
    out = np.zeros(len(np.asarray(scores[names[0]])), dtype=bool)
    for name in names:
        out |= np.asarray(scores[name]) > thresholds[name]
    return out


# Issue 8's goal for the gate: at most 5% of in-distribution images turned away.
ID_REJECTION_BUDGET = 0.05
ONE_SIDED_95_Z = 1.6449


def acceptance_for_rejection_budget(
    n_val: int, budget: float = ID_REJECTION_BUDGET, z: float = ONE_SIDED_95_Z
) -> float:
    """The val acceptance level at which the gate keeps within `budget` of in-distribution images
    rejected on a new sample of `n_val` images with 95% confidence (one-sided).

    Thresholds at val's quantile 1 - r reject r of val; on new images from the same distribution
    the share rejected varies around r with standard deviation about sqrt(r (1 - r) (2 / n_val))
    (val's own quantile is a sample too). The level is 1 - r for the largest r with
    r + z * sd <= budget, r rounded down to 0.1%. Fitting r = budget itself (95% acceptance, as
    2.0.0 did) misses the budget on about half of new samples: 2.0.0 rejected 6.2% of `test`."""
    if n_val < 1 or not 0.0 < budget < 0.5:
        raise ValueError(f"need n_val >= 1 and 0 < budget < 0.5, got {n_val}, {budget}")
    lo, hi = 0.0, budget
    for _ in range(60):
        mid = (lo + hi) / 2.0
        if mid + z * math.sqrt(mid * (1.0 - mid) * 2.0 / n_val) <= budget:
            lo = mid
        else:
            hi = mid
    return round(1.0 - math.floor(lo * 1000.0) / 1000.0, 3)


def fit_rule_thresholds(
    val_scores: Mapping[str, NDArray[np.floating]], rule: Sequence[str], target_acceptance: float
) -> tuple[dict[str, float], float]:
    """(score -> threshold, achieved joint acceptance on val) for an OR-rule.

    Each threshold is the same quantile level q of its score on in-distribution val; q is the
    smallest level (bisected) whose joint acceptance reaches the target, so the rule accepts as
    close to `target_acceptance` of val as the ties allow and never less."""
    values = {name: np.asarray(val_scores[name], dtype=np.float64) for name in rule}

    def at(level: float) -> tuple[dict[str, float], float]:
        th = {n: float(np.quantile(v, level, method="higher")) for n, v in values.items()}
        return th, 1.0 - float(rejects(values, th).mean())

    lo, hi = target_acceptance, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2.0
        if at(mid)[1] >= target_acceptance:
            hi = mid
        else:
            lo = mid
    return at(hi)


def rank_score(
    scores: Mapping[str, NDArray[np.floating]],
    val_scores: Mapping[str, NDArray[np.floating]],
    rule: Sequence[str],
) -> FloatArray:
    """One scalar per image for ROC analysis of an OR-rule: the largest of its scores' empirical
    quantile levels on val (thresholding it at q is the rule at shared level q). Past the val
    maximum a score's level keeps growing with its distance in val standard deviations, so
    far-out images still rank above merely-unusual ones instead of all tying at 1."""
    combined: FloatArray | None = None
    for name in rule:
        ref = np.sort(np.asarray(val_scores[name], dtype=np.float64))
        s = np.asarray(scores[name], dtype=np.float64)
        level = np.searchsorted(ref, s, side="right") / len(ref)
        beyond = np.maximum(s - ref[-1], 0.0) / max(float(ref.std()), 1e-12)
        level = level + beyond
        combined = level if combined is None else np.maximum(combined, level)
    assert combined is not None
    return combined


def candidate_rules(names: Sequence[str], max_size: int = 3) -> list[tuple[str, ...]]:
    """Every single score and every OR-combination of up to `max_size` scores."""
    return [c for size in range(1, max_size + 1) for c in itertools.combinations(names, size)]


def auroc(in_dist: NDArray[np.floating], out_dist: NDArray[np.floating]) -> float:
    """P(score of an OOD image > score of an ID image), ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata

    a, b = np.asarray(in_dist, dtype=np.float64), np.asarray(out_dist, dtype=np.float64)
    ranks = rankdata(np.concatenate([a, b]))
    u = ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2.0
    return float(u / (len(a) * len(b)))
