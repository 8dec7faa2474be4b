"""The OOD detector's score formulas, written once (pure numpy): training fits and measures with
them (`training.ood`), the OOD service scores requests with them (`services.ood.domain.scoring`).

Every function takes a batch (rows = images; a single 1-D row is accepted too) and returns one
float64 per row, oriented as the `OodDetector` contract states: HIGHER means MORE
out-of-distribution.

- msp:         1 - max_c softmax(logits / T)_c                      (T = bundle temperature)
- entropy:     -sum_c p_c log p_c / log K,  p = softmax(logits / T)  (in [0, 1])
- energy:      -T * logsumexp(logits / T)                           (Liu et al. 2020)
- mahalanobis: min_c (e - mu_c)^T P (e - mu_c), P = inverse of the shared covariance
               (Lee et al. 2018)
- knn:         1 - cosine similarity of e to its k-th nearest row of the L2-normalised
               reference embeddings (Sun et al. 2022)
- oe:          w . e + b, the logit of the outlier-exposure head (dermoscopy vs not)
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from model_bundle.triage import softmax

FloatArray = NDArray[np.float64]


def _rows(x: NDArray[np.floating]) -> FloatArray:
    out: FloatArray = np.atleast_2d(np.asarray(x, dtype=np.float64))
    return out


def msp_score(logits: NDArray[np.floating], temperature: float) -> FloatArray:
    """1 - max softmax(logits / T) per row: 0 for a certain model, 1 - 1/K for uniform logits."""
    out: FloatArray = 1.0 - softmax(_rows(logits), temperature).max(axis=-1)
    return out


def entropy_score(logits: NDArray[np.floating], temperature: float) -> FloatArray:
    """Shannon entropy of softmax(logits / T) divided by log K, in [0, 1] (1 = uniform)."""
    p = softmax(_rows(logits), temperature)
    # p log p -> 0 as p -> 0: zero probabilities add nothing (log of them would be -inf).
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    out: FloatArray = np.clip(-terms.sum(axis=-1) / math.log(p.shape[-1]), 0.0, 1.0)
    return out


def energy_score(logits: NDArray[np.floating], temperature: float) -> FloatArray:
    """-T * logsumexp(logits / T) per row: higher = less energy in any class."""
    z = _rows(logits) / temperature
    peak = z.max(axis=-1, keepdims=True)
    lse = peak[..., 0] + np.log(np.exp(z - peak).sum(axis=-1))
    out: FloatArray = -temperature * lse
    return out


def mean_terms(class_means: NDArray[np.floating], precision: NDArray[np.floating]) -> FloatArray:
    """mu_c'P mu_c per class: the part of every Mahalanobis distance that no image changes (K x D
    x D multiply-adds, seven times the rest of one image's score), so a server computes it once."""
    mu = np.asarray(class_means, dtype=np.float64)
    out: FloatArray = ((mu @ np.asarray(precision, dtype=np.float64)) * mu).sum(axis=1)
    return out


def mahalanobis_score(
    embeddings: NDArray[np.floating],
    class_means: NDArray[np.floating],
    precision: NDArray[np.floating],
    class_terms: NDArray[np.floating] | None = None,
) -> FloatArray:
    """min over classes of (e - mu_c)^T P (e - mu_c), per row; 0 at a class mean. `class_terms`:
    `mean_terms(class_means, precision)` computed beforehand (the same numbers either way)."""
    e = _rows(embeddings)
    mu = np.asarray(class_means, dtype=np.float64)
    p = np.asarray(precision, dtype=np.float64)
    terms = mean_terms(mu, p) if class_terms is None else np.asarray(class_terms, dtype=np.float64)
    # (e - mu)^T P (e - mu) = e'Pe - 2 e'P mu + mu'P mu, for all (row, class) pairs at once.
    ep = e @ p
    d = (ep * e).sum(axis=1)[:, None] - 2.0 * ep @ mu.T + terms[None, :]
    # P is positive semi-definite, so a negative distance is only float round-off.
    out: FloatArray = np.maximum(d.min(axis=1), 0.0)
    return out


def l2_normalise(x: NDArray[np.floating]) -> FloatArray:
    """Rows scaled to unit length (a zero row stays zero)."""
    a = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    out: FloatArray = a / np.maximum(norm, 1e-12)
    return out


def knn_score(embeddings: NDArray[np.floating], reference: NDArray[np.floating], k: int) -> FloatArray:
    """1 - cosine similarity to the k-th nearest reference row, per row (0 to 2)."""
    if not 1 <= k <= len(reference):
        raise ValueError(f"knn k={k} must be in [1, {len(reference)}]")
    sims = l2_normalise(_rows(embeddings)) @ np.asarray(reference, dtype=np.float64).T
    kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]
    out: FloatArray = 1.0 - kth
    return out


def oe_score(
    embeddings: NDArray[np.floating], weight: NDArray[np.floating], bias: NDArray[np.floating]
) -> FloatArray:
    """The outlier-exposure head's logit w . e + b per row (higher = less like dermoscopy)."""
    w = np.asarray(weight, dtype=np.float64).reshape(-1)
    out: FloatArray = _rows(embeddings) @ w + float(np.asarray(bias).reshape(-1)[0])
    return out
