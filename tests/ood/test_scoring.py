"""MSP, normalized entropy and energy on hand-made logits with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.ood.domain.scoring import energy_score, score_logits

K = 7


def test_uniform_logits_have_entropy_one_and_msp_one_over_k() -> None:
    scores = score_logits(np.zeros(K), temperature=1.0)

    assert scores.entropy == pytest.approx(1.0)
    assert scores.msp == pytest.approx(1 / K)


def test_one_hot_like_logits_have_entropy_near_zero_and_msp_near_one() -> None:
    logits = np.full(K, -20.0)
    logits[3] = 20.0

    scores = score_logits(logits, temperature=1.0)

    assert scores.entropy < 1e-6
    assert scores.msp == pytest.approx(1.0)


def test_two_equal_classes_have_entropy_log2_over_logk() -> None:
    logits = np.full(K, -50.0)
    logits[:2] = 10.0

    scores = score_logits(logits, temperature=1.0)

    assert scores.msp == pytest.approx(0.5)
    assert scores.entropy == pytest.approx(math.log(2) / math.log(K))


def test_higher_temperature_flattens_the_output() -> None:
    logits = np.asarray([3.0, 1.0, 0.0, 0.0, -1.0, 0.5, 0.2])

    cold, warm = score_logits(logits, temperature=1.0), score_logits(logits, temperature=2.0)

    assert warm.msp < cold.msp
    assert warm.entropy > cold.entropy


def test_msp_is_read_at_the_given_temperature() -> None:
    logits = np.asarray([2.0, 0.0])

    assert score_logits(logits, temperature=2.0).msp == pytest.approx(1 / (1 + math.exp(-1.0)))


def test_energy_of_zero_logits_is_minus_t_log_k() -> None:
    assert energy_score(np.zeros(K), temperature=1.5) == pytest.approx(-1.5 * math.log(K))


def test_energy_is_minus_t_logsumexp_of_logits_over_t() -> None:
    logits = np.asarray([1.0, 2.0, 3.0])
    expected = -2.0 * math.log(sum(math.exp(v / 2.0) for v in logits))

    assert energy_score(logits, temperature=2.0) == pytest.approx(expected)


def test_scores_are_finite_for_huge_logits() -> None:
    scores = score_logits(np.asarray([1e4, -1e4, 0.0]), temperature=1.0)

    assert all(math.isfinite(v) for v in scores.as_dict().values())
    assert scores.energy == pytest.approx(-1e4)
