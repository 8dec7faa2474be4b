"""OOD service settings (env prefix `OOD_`), validated at start-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.secrets import InternalToken
from services.ood.domain.decision import QualityThresholds

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE_DIR = REPO_ROOT / "models" / "skintriage-effnet-lite0" / "2.0.1"

_DEFAULTS = QualityThresholds()


class Settings(BaseSettings):
    """Everything the OOD service reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="OOD_", frozen=True, extra="ignore")

    bundle_dir: Path = DEFAULT_BUNDLE_DIR
    internal_token: InternalToken
    log_level: str = "INFO"

    tenant_acceptance: dict[str, float] = Field(
        default_factory=dict,
        description="tenant id (as reports issues it, 'ten_...') -> target acceptance of "
        'in-distribution images (JSON, e.g. {"ten_3b08...": 0.99}); each level must be in the '
        "bundle's ood_detector.acceptance_grid",
    )

    quality_min_side_px: int = Field(default=_DEFAULTS.min_side_px, gt=0)
    quality_min_brightness: float = Field(default=_DEFAULTS.min_brightness, ge=0, le=255)
    quality_max_brightness: float = Field(default=_DEFAULTS.max_brightness, ge=0, le=255)
    quality_max_underexposed_fraction: float = Field(default=_DEFAULTS.max_underexposed_fraction, ge=0, le=1)
    quality_max_overexposed_fraction: float = Field(default=_DEFAULTS.max_overexposed_fraction, ge=0, le=1)
    quality_min_laplacian_variance: float = Field(default=_DEFAULTS.min_laplacian_variance, ge=0)
    quality_min_contrast_std: float = Field(default=_DEFAULTS.min_contrast_std, ge=0)
    quality_max_dominant_fraction: float = Field(default=_DEFAULTS.max_dominant_fraction, ge=0, le=1)
    quality_min_colourfulness: float = Field(default=_DEFAULTS.min_colourfulness, ge=0)

    @field_validator("tenant_acceptance")
    @classmethod
    def _acceptance_levels(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {tenant: level for tenant, level in value.items() if not tenant or not 0.0 < level < 1.0}
        if bad:
            raise ValueError(f"tenant ids must be non-empty and levels in (0, 1), got {bad}")
        return value

    def quality_thresholds(self) -> QualityThresholds:
        """The quality gate's limits."""
        return QualityThresholds(
            min_side_px=self.quality_min_side_px,
            min_brightness=self.quality_min_brightness,
            max_brightness=self.quality_max_brightness,
            max_underexposed_fraction=self.quality_max_underexposed_fraction,
            max_overexposed_fraction=self.quality_max_overexposed_fraction,
            min_laplacian_variance=self.quality_min_laplacian_variance,
            min_contrast_std=self.quality_min_contrast_std,
            max_dominant_fraction=self.quality_max_dominant_fraction,
            min_colourfulness=self.quality_min_colourfulness,
        )


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once; a FastAPI dependency tests can override."""
    return Settings()  # type: ignore[call-arg]  # fields come from the environment
