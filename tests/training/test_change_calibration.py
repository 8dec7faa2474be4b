"""training.change_calibration on synthetic pairs: which pairs are drawn, the AUROC, the fitted
threshold and the per-pair measures."""

from __future__ import annotations

import numpy as np
import pytest

from training.change_calibration import (
    auroc,
    different_lesion_pairs,
    fit_threshold,
    lesion_groups,
    measure_calibration,
    pair_measures,
    same_lesion_pairs,
)

LESIONS = ["L1", "L1", "L2", "L3", "L3", "L3", "L4"]


def test_lesions_with_one_image_take_no_part() -> None:
    assert lesion_groups(LESIONS) == {"L1": [0, 1], "L3": [3, 4, 5]}


def test_same_lesion_pairs_are_every_pair_within_a_lesion() -> None:
    pairs = same_lesion_pairs(lesion_groups(LESIONS))

    assert sorted(pairs) == [(0, 1), (3, 4), (3, 5), (4, 5)]


def test_different_lesion_pairs_are_distinct_and_never_within_a_lesion() -> None:
    rng = np.random.default_rng(0)

    pairs = different_lesion_pairs(LESIONS, range(len(LESIONS)), 12, rng)

    assert len(pairs) == len(set(pairs)) == 12
    assert all(i < j and LESIONS[i] != LESIONS[j] for i, j in pairs)


def test_different_lesion_pairs_stop_when_every_pair_is_drawn() -> None:
    pairs = different_lesion_pairs(["A", "B", "C"], range(3), 10, np.random.default_rng(0))

    assert pairs == [(0, 1), (0, 2), (1, 2)]


def test_auroc_of_separated_overlapping_and_tied_scores() -> None:
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 3.0]), np.array([2.0, 4.0])) == pytest.approx(0.25)
    assert auroc(np.array([1.0]), np.array([1.0])) == pytest.approx(0.5)
    assert auroc(np.array([np.nan]), np.array([1.0])) is None


def test_the_threshold_is_the_95th_percentile_of_same_lesion_values() -> None:
    same = np.arange(101, dtype=float)

    assert fit_threshold(same) == pytest.approx(95.0)
    assert fit_threshold(np.array([np.nan, 1.0, 1.0])) == pytest.approx(1.0)


def test_pair_measures_compute_the_three_changes() -> None:
    probability = np.array([0.1, 0.4, 0.9])
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    area = np.array([0.2, 0.3, 0.0])

    measures = pair_measures(probability, embeddings, area, [(0, 1), (2, 0)])

    np.testing.assert_allclose(measures["malignant_probability_delta"], [0.3, 0.8])
    np.testing.assert_allclose(measures["embedding_distance"], [1.0, 0.0], atol=1e-12)
    assert measures["area_relative_change"][0] == pytest.approx(0.5)
    assert np.isnan(measures["area_relative_change"][1])  # the earlier area is 0


def test_a_measure_that_separates_gets_a_high_auroc_and_a_low_false_change_rate() -> None:
    rng = np.random.default_rng(1)
    fit_same = rng.normal(0.1, 0.02, 500)
    test_same = rng.normal(0.1, 0.02, 200)
    test_different = rng.normal(0.5, 0.1, 800)

    result = measure_calibration(fit_same, test_same, test_different)

    assert result.threshold == pytest.approx(np.quantile(fit_same, 0.95))
    assert result.auroc_test is not None and result.auroc_test > 0.99
    assert result.false_change_rate_test is not None and result.false_change_rate_test < 0.12
    assert result.detection_rate_test is not None and result.detection_rate_test > 0.95
