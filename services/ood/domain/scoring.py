"""Out-of-distribution scores from one image's raw logits (pure numpy).

All scores use the bundle's temperature, so MSP and entropy are read off the same calibrated
probabilities the worker reports, and the thresholds in bundle.json must be fitted on those too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Scores:
    """MSP and normalized entropy drive the decision; energy is reported for analysis only."""

    msp: float
    entropy: float
    energy: float

    def as_dict(self) -> dict[str, float]:
        """Scores as they appear in OodScoreResponse.scores."""
        return {"msp": self.msp, "entropy": self.entropy, "energy": self.energy}


def _logsumexp(z: NDArray[np.float64]) -> float:
    peak = float(z.max())
    return peak + math.log(float(np.exp(z - peak).sum()))


def calibrated_probabilities(logits: NDArray[np.floating], temperature: float) -> NDArray[np.float64]:
    """softmax(logits / T) for one image."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    e = np.exp(z - z.max())
    out: NDArray[np.float64] = e / e.sum()
    return out


def max_softmax_probability(probs: NDArray[np.floating]) -> float:
    """MSP (Hendrycks & Gimpel 2017): low when the model is unsure; 1/K at worst."""
    return float(np.max(probs))


def normalized_entropy(probs: NDArray[np.floating]) -> float:
    """Shannon entropy / log(K), in [0, 1]: 1.0 for a uniform output, 0.0 for a one-hot one."""
    p = np.asarray(probs, dtype=np.float64)
    k = p.size
    nonzero = p[p > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    return min(1.0, max(0.0, entropy / math.log(k)))


def energy_score(logits: NDArray[np.floating], temperature: float) -> float:
    """Energy (Liu et al. 2020): -T * logsumexp(logits / T); lower means more in-distribution."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    return -temperature * _logsumexp(z)


def score_logits(logits: NDArray[np.floating], temperature: float) -> Scores:
    """Every score for one image's raw logits at the bundle's temperature."""
    probs = calibrated_probabilities(logits, temperature)
    return Scores(
        msp=max_softmax_probability(probs),
        entropy=normalized_entropy(probs),
        energy=energy_score(logits, temperature),
    )
