"""Per-tenant strictness: a tenant picks a target acceptance (the share of in-distribution images
accepted) and gets the thresholds the detector was fitted with for it, without refitting.

The detector's own `thresholds` hold at its `target_acceptance`; `acceptance_grid` holds other
levels keyed by their decimal text ("0.99"). Levels are matched by value, so 0.99 finds "0.99".
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from contracts.bundle import OodDetector
from services.ood.domain.decision import DetectorRule

# Two levels closer than this are the same level: grid keys are short decimals such as "0.95".
_LEVEL_TOLERANCE = 1e-9


class UnknownAcceptanceError(ValueError):
    """A configured acceptance level that the detector has no thresholds for."""


def _thresholds_at(detector: OodDetector, level: float) -> dict[str, float] | None:
    if math.isclose(level, detector.target_acceptance, abs_tol=_LEVEL_TOLERANCE):
        return dict(detector.thresholds)
    for key, thresholds in detector.acceptance_grid.items():
        try:
            grid_level = float(key)
        except ValueError:
            continue
        if math.isclose(level, grid_level, abs_tol=_LEVEL_TOLERANCE):
            return dict(thresholds)
    return None


def rule_at(detector: OodDetector, level: float) -> DetectorRule:
    """The detector's rule at acceptance `level`; UnknownAcceptanceError when it has no
    thresholds for that level, or lacks one of the rule's scores there."""
    thresholds = _thresholds_at(detector, level)
    if thresholds is None:
        available = sorted({f"{detector.target_acceptance:g}", *detector.acceptance_grid})
        raise UnknownAcceptanceError(f"no OOD thresholds at acceptance {level:g}; the bundle has {available}")
    missing = [name for name in detector.rule if name not in thresholds]
    if missing:
        raise UnknownAcceptanceError(f"thresholds at acceptance {level:g} lack the rule's scores {missing}")
    return DetectorRule(
        rule=tuple(detector.rule),
        thresholds={name: thresholds[name] for name in detector.rule},
        target_acceptance=level,
    )


def tenant_rules(detector: OodDetector, tenant_acceptance: Mapping[str, float]) -> dict[str, DetectorRule]:
    """Each configured tenant's rule, resolved once at start-up so a bad level fails fast."""
    return {tenant: rule_at(detector, level) for tenant, level in tenant_acceptance.items()}
