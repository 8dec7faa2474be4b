"""Mahalanobis and kNN scores on hand-made embeddings with known answers, and the detector's
orientation of every score (higher = more out-of-distribution)."""

from __future__ import annotations

import numpy as np
import pytest

from model_bundle import ood_scores as formulas
from services.ood.domain.scoring import DetectorStats, knn_score, mahalanobis_score, score_output

UNIT_2D = np.asarray([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


def test_mahalanobis_is_zero_at_a_class_mean() -> None:
    means = np.asarray([[1.0, 2.0], [5.0, -1.0]])

    assert mahalanobis_score(means[1], means, np.eye(2)) == pytest.approx(0.0)


def test_mahalanobis_with_identity_precision_is_squared_distance_to_the_nearest_mean() -> None:
    means = np.asarray([[0.0, 0.0], [10.0, 10.0]])

    assert mahalanobis_score(np.asarray([3.0, 4.0]), means, np.eye(2)) == pytest.approx(25.0)


def test_mahalanobis_weights_each_direction_by_the_precision() -> None:
    precision = np.diag([4.0, 1.0])

    assert mahalanobis_score(np.asarray([1.0, 1.0]), np.zeros((1, 2)), precision) == pytest.approx(5.0)


def test_mahalanobis_uses_off_diagonal_precision() -> None:
    precision = np.asarray([[2.0, 1.0], [1.0, 2.0]])

    # (1, 1) P (1, 1)^T = 2 + 1 + 1 + 2
    assert mahalanobis_score(np.asarray([1.0, 1.0]), np.zeros((1, 2)), precision) == pytest.approx(6.0)


@pytest.mark.parametrize(("k", "expected"), [(1, 0.0), (2, 1.0), (3, 2.0)])
def test_knn_is_one_minus_cosine_to_the_kth_nearest_reference(k: int, expected: float) -> None:
    assert knn_score(np.asarray([2.0, 0.0]), UNIT_2D, k) == pytest.approx(expected)


def test_knn_ignores_the_embedding_length() -> None:
    embedding = np.asarray([3.0, 4.0])

    assert knn_score(embedding, UNIT_2D, 1) == pytest.approx(knn_score(embedding * 100, UNIT_2D, 1))
    assert knn_score(embedding, UNIT_2D, 1) == pytest.approx(1 - 0.8)


def test_knn_with_k_beyond_the_reference_is_refused() -> None:
    with pytest.raises(ValueError):
        knn_score(np.asarray([1.0, 0.0]), UNIT_2D, 4)


def test_without_stats_only_the_logit_scores_are_computed() -> None:
    scores = score_output(np.zeros(3), np.ones(2), 1.0, None, knn_k=1)

    assert set(scores.as_dict()) == {"msp", "entropy", "energy"}


def test_with_stats_every_score_is_computed() -> None:
    stats = DetectorStats(class_means=np.zeros((3, 2)), precision=np.eye(2), knn_reference=UNIT_2D)

    scores = score_output(np.zeros(3), np.asarray([0.0, 2.0]), 1.0, stats, knn_k=1)

    assert scores.mahalanobis == pytest.approx(4.0)
    assert scores.knn == pytest.approx(0.0)
    assert set(scores.as_dict()) == {"msp", "entropy", "energy", "mahalanobis", "knn"}


def test_oriented_msp_is_one_minus_the_max_probability() -> None:
    scores = score_output(np.zeros(4), np.ones(2), 1.0, None, knn_k=1)

    assert scores.as_dict()["msp"] == pytest.approx(0.25)
    assert scores.oriented()["msp"] == pytest.approx(0.75)
    assert scores.oriented()["energy"] == scores.as_dict()["energy"]


def test_the_class_terms_computed_once_give_exactly_the_scores_computed_per_request() -> None:
    # The service keeps mu'P mu per class (DetectorStats.class_terms) instead of recomputing it for
    # every image: the distances must be the very same numbers training's thresholds were fitted on.
    rng = np.random.default_rng(7)
    means = rng.normal(size=(7, 48))
    root = rng.normal(size=(48, 48))
    precision = root @ root.T
    embeddings = rng.normal(size=(9, 48))
    stats = DetectorStats(class_means=means, precision=precision, knn_reference=np.eye(48)[:10])

    per_request = formulas.mahalanobis_score(embeddings, means, precision)
    precomputed = formulas.mahalanobis_score(embeddings, means, precision, stats.class_terms)

    assert np.array_equal(per_request, precomputed)
    served = [mahalanobis_score(e, means, precision, stats.class_terms) for e in embeddings]
    assert served == [mahalanobis_score(e, means, precision) for e in embeddings]
