"""The OOD scorers and the rule's thresholds on hand-made inputs with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from training.ood import (
    OodStats,
    all_scores,
    auroc,
    candidate_rules,
    energy_score,
    entropy_score,
    fit_gaussian,
    fit_rule_thresholds,
    knn_reference,
    knn_score,
    mahalanobis_score,
    msp_score,
    rank_score,
    rejects,
)

K = 7


def test_uniform_logits_have_entropy_one_and_msp_score_one_minus_one_over_k() -> None:
    logits = np.full((2, K), 3.0)
    assert entropy_score(logits, 0.7) == pytest.approx([1.0, 1.0])
    assert msp_score(logits, 0.7) == pytest.approx([1 - 1 / K, 1 - 1 / K])


def test_confident_logits_score_near_zero_on_msp_and_entropy() -> None:
    logits = np.array([[50.0, 0, 0, 0, 0, 0, 0]])
    assert msp_score(logits, 1.0)[0] == pytest.approx(0.0, abs=1e-12)
    assert entropy_score(logits, 1.0)[0] == pytest.approx(0.0, abs=1e-9)


def test_energy_is_minus_t_logsumexp_of_logits_over_t() -> None:
    logits = np.array([[1.0, 2.0, 3.0]])
    t = 0.5
    expected = -t * math.log(sum(math.exp(v / t) for v in (1.0, 2.0, 3.0)))
    assert energy_score(logits, t)[0] == pytest.approx(expected)


def test_energy_is_stable_for_huge_logits() -> None:
    assert np.isfinite(energy_score(np.array([[1e4, 0.0]]), 0.5)).all()


def test_point_at_a_class_mean_has_mahalanobis_zero() -> None:
    means = np.array([[0.0, 0.0], [5.0, 1.0]])
    precision = np.array([[2.0, 0.3], [0.3, 1.0]])
    scores = mahalanobis_score(np.array([[5.0, 1.0], [0.0, 0.0]]), means, precision)
    assert scores == pytest.approx([0.0, 0.0], abs=1e-9)


def test_mahalanobis_takes_the_nearest_class_under_the_precision() -> None:
    means = np.array([[0.0, 0.0], [10.0, 0.0]])
    precision = np.diag([1.0, 4.0])
    # (1, 1) from class 0: 1*1 + 4*1 = 5; from class 1: 81 + 4 = 85
    assert mahalanobis_score(np.array([[1.0, 1.0]]), means, precision)[0] == pytest.approx(5.0)


def test_reference_point_has_knn_distance_zero_to_itself_with_k_one() -> None:
    ref = knn_reference(np.random.default_rng(0).normal(size=(20, 4)), max_size=20)
    assert knn_score(ref[3:4] * 7.5, ref, k=1)[0] == pytest.approx(0.0, abs=1e-6)


def test_knn_distance_of_an_opposite_vector_is_two() -> None:
    ref = knn_reference(np.array([[1.0, 0.0]]), max_size=1)
    assert knn_score(np.array([[-3.0, 0.0]]), ref, k=1)[0] == pytest.approx(2.0)


def test_knn_reference_is_subsampled_to_its_cap_and_unit_length() -> None:
    ref = knn_reference(np.random.default_rng(0).normal(size=(100, 5)), max_size=30)
    assert ref.shape == (30, 5)
    assert ref.dtype == np.float32
    assert np.linalg.norm(ref, axis=1) == pytest.approx(np.ones(30), abs=1e-6)


def test_knn_rejects_k_larger_than_the_reference() -> None:
    with pytest.raises(ValueError):
        knn_score(np.ones((1, 2)), np.ones((3, 2)), k=4)


@pytest.fixture(scope="module")
def gaussian_sets() -> dict[str, np.ndarray]:
    """Three train classes in 16-d, held-out ID points from them, and a shifted outlier cluster."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 3, size=(3, 16))
    labels = np.repeat(np.arange(3), 200)
    train = centres[labels] + rng.normal(size=(600, 16))
    held = centres[np.repeat(np.arange(3), 100)] + rng.normal(size=(300, 16))
    outliers = rng.normal(0, 3, size=(1, 16)) * -1 + 6 + rng.normal(size=(300, 16))
    return {"train": train, "labels": labels, "held": held, "outliers": outliers}


def test_mahalanobis_fitted_on_gaussians_separates_an_outlier_cluster(
    gaussian_sets: dict[str, np.ndarray],
) -> None:
    g = gaussian_sets
    means, precision, shrinkage = fit_gaussian(g["train"], g["labels"], 3)
    assert means.dtype == precision.dtype == np.float32
    assert 0.0 <= shrinkage <= 1.0
    score = auroc(
        mahalanobis_score(g["held"], means, precision), mahalanobis_score(g["outliers"], means, precision)
    )
    assert score > 0.99


def test_knn_fitted_on_gaussians_separates_an_outlier_cluster(gaussian_sets: dict[str, np.ndarray]) -> None:
    g = gaussian_sets
    ref = knn_reference(g["train"], max_size=300)
    assert auroc(knn_score(g["held"], ref, 5), knn_score(g["outliers"], ref, 5)) > 0.99


def test_fit_gaussian_gives_an_absent_class_the_overall_mean() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    means, _, _ = fit_gaussian(x, np.zeros(50, dtype=int), 2)
    assert means[1] == pytest.approx(x.mean(axis=0), abs=1e-6)


def test_auroc_is_one_for_separated_scores_and_half_for_ties() -> None:
    assert auroc(np.array([0.1, 0.2]), np.array([0.5, 0.9])) == 1.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5


@pytest.mark.parametrize("target", [0.90, 0.95, 0.98, 0.99])
def test_rule_thresholds_accept_the_target_share_of_in_distribution(target: float) -> None:
    rng = np.random.default_rng(2)
    val = {"a": rng.normal(size=4000), "b": rng.exponential(size=4000)}
    thresholds, accepted = fit_rule_thresholds(val, ("a", "b"), target)
    assert accepted == pytest.approx(1.0 - rejects(val, thresholds).mean())
    assert target <= accepted <= target + 0.002
    fresh = {"a": rng.normal(size=20000), "b": rng.exponential(size=20000)}
    assert 1.0 - rejects(fresh, thresholds).mean() == pytest.approx(target, abs=0.01)


def test_rule_rejects_when_any_score_exceeds_its_threshold() -> None:
    scores = {"a": np.array([0.0, 2.0, 0.0]), "b": np.array([0.0, 0.0, 5.0])}
    assert rejects(scores, {"a": 1.0, "b": 1.0}).tolist() == [False, True, True]
    assert rejects(scores, {"a": 1.0}).tolist() == [False, True, False]


def test_rank_score_orders_far_outliers_above_the_val_maximum() -> None:
    val = {"a": np.linspace(0, 1, 101)}
    ranks = rank_score({"a": np.array([0.5, 1.0, 2.0, 9.0])}, val, ("a",))
    assert ranks[0] < ranks[1] < ranks[2] < ranks[3]


def test_candidate_rules_are_every_combination_of_up_to_three_scores() -> None:
    rules = candidate_rules(("msp", "entropy", "energy", "mahalanobis", "knn"))
    assert len(rules) == 5 + 10 + 10
    assert ("mahalanobis",) in rules and ("msp", "mahalanobis", "knn") in rules


def test_all_scores_skips_embedding_scores_without_stats_and_round_trips_stats(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    logits, emb = rng.normal(size=(4, K)), rng.normal(size=(4, 6))
    assert set(all_scores(logits, emb, 1.0, None, 1)) == {"msp", "entropy", "energy"}
    means, precision, _ = fit_gaussian(rng.normal(size=(40, 6)), rng.integers(0, K, 40), K)
    stats = OodStats(means, precision, knn_reference(rng.normal(size=(40, 6)), 10))
    stats.save(tmp_path / "ood_stats.npz")
    loaded = OodStats.load(tmp_path / "ood_stats.npz")
    assert set(all_scores(logits, emb, 1.0, loaded, 3)) == {"msp", "entropy", "energy", "mahalanobis", "knn"}
    assert loaded.precision.dtype == np.float32
