"""Per-tenant strictness: each tenant's acceptance level picks its thresholds from the
detector's acceptance grid; a level the grid lacks is refused before anything is served."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from contracts.bundle import OodDetector
from services.ood.config import Settings
from services.ood.domain.scoring import DetectorStats
from services.ood.domain.strictness import UnknownAcceptanceError, rule_at
from services.ood.domain.verdict import build_detector
from tests.ood.conftest import TOKEN

SPEC = OodDetector(
    fitted_on_sha256="a" * 64,
    knn_k=1,
    rule=("mahalanobis", "msp"),
    target_acceptance=0.95,
    thresholds={"mahalanobis": 4.0, "msp": 0.6, "knn": 0.3},
    acceptance_grid={
        "0.90": {"mahalanobis": 2.0, "msp": 0.5},
        "0.99": {"mahalanobis": 16.0, "msp": 0.8},
        "0.98": {"mahalanobis": 9.0},
    },
)
STATS = DetectorStats(class_means=np.zeros((2, 2)), precision=np.eye(2), knn_reference=np.eye(2))


def test_a_tenants_level_picks_the_grid_thresholds() -> None:
    detector = build_detector(SPEC, STATS, {"clinic-a": 0.99})

    assert dict(detector.rule_for("clinic-a").thresholds) == {"mahalanobis": 16.0, "msp": 0.8}
    assert detector.rule_for("clinic-a").target_acceptance == 0.99


def test_an_unconfigured_tenant_gets_the_bundles_own_thresholds() -> None:
    detector = build_detector(SPEC, STATS, {"clinic-a": 0.99})

    assert dict(detector.rule_for("clinic-b").thresholds) == {"mahalanobis": 4.0, "msp": 0.6}
    assert detector.rule_for(None).target_acceptance == 0.95


def test_the_bundles_target_acceptance_needs_no_grid_entry() -> None:
    assert dict(rule_at(SPEC, 0.95).thresholds) == {"mahalanobis": 4.0, "msp": 0.6}


def test_level_is_matched_by_value_not_text() -> None:
    assert dict(rule_at(SPEC, 0.9).thresholds) == {"mahalanobis": 2.0, "msp": 0.5}


def test_level_missing_from_the_grid_is_refused() -> None:
    with pytest.raises(UnknownAcceptanceError):
        build_detector(SPEC, STATS, {"clinic-a": 0.97})


def test_grid_level_lacking_a_rule_score_is_refused() -> None:
    with pytest.raises(UnknownAcceptanceError):
        build_detector(SPEC, STATS, {"clinic-a": 0.98})


def test_tenant_acceptance_is_read_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OOD_INTERNAL_TOKEN", TOKEN)
    monkeypatch.setenv("OOD_TENANT_ACCEPTANCE", '{"clinic-a": 0.99, "clinic-b": 0.9}')

    settings = Settings()  # type: ignore[call-arg]  # from the environment

    assert settings.tenant_acceptance == {"clinic-a": 0.99, "clinic-b": 0.9}


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5])
def test_acceptance_outside_zero_one_is_refused(level: float) -> None:
    with pytest.raises(ValidationError):
        Settings(internal_token=TOKEN, tenant_acceptance={"clinic-a": level})
