"""Post-hoc logit adjustment (build_bundle.choose_logit_adjustment): chosen on val, 0 unless it
helps balanced accuracy and accuracy together."""

from __future__ import annotations

import numpy as np

from training.build_bundle import choose_logit_adjustment


def _val(bias_against_rare: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = np.array([900, 100])
    labels = np.repeat([0, 1], counts)
    logits = rng.normal(0, 1.0, (len(labels), 2))
    logits[np.arange(len(labels)), labels] += 2.0  # informative, but...
    logits[:, 1] -= bias_against_rare  # ...a head that under-predicts the rare class
    return logits, labels, np.log(counts / counts.sum())


def test_a_head_biased_against_the_rare_class_gets_a_positive_tau() -> None:
    logits, labels, log_prior = _val(bias_against_rare=2.5)
    tau, table = choose_logit_adjustment(logits, labels, log_prior)
    assert tau > 0
    chosen = next(r for r in table if r["tau"] == tau)
    untouched = next(r for r in table if r["tau"] == 0.0)
    assert chosen["balanced_accuracy"] > untouched["balanced_accuracy"]
    assert chosen["mean"] >= untouched["mean"]


def test_a_head_biased_towards_the_rare_class_gets_a_negative_tau() -> None:
    logits, labels, log_prior = _val(bias_against_rare=-3.0)
    tau, table = choose_logit_adjustment(logits, labels, log_prior)
    assert tau < 0
    assert (
        next(r for r in table if r["tau"] == tau)["accuracy"]
        > next(r for r in table if r["tau"] == 0)["accuracy"]
    )


def test_with_a_uniform_prior_nothing_changes_and_tau_stays_zero() -> None:
    logits, labels, _ = _val(bias_against_rare=1.0)
    tau, table = choose_logit_adjustment(logits, labels, np.log(np.array([0.5, 0.5])))
    assert tau == 0.0 and len(table) == 7
    assert len({round(r["mean"], 6) for r in table}) == 1
