"""Image-quality measurements: the worker computes them, the OOD service gates on them.

They travel as `contracts.ood.OodScoreRequest.quality` (a `dict[str, float]`); this model names
the keys and their units so both services agree on them without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ANALYSIS_SHORT_SIDE_PX = 128
"""Measurements other than the size are taken on a grayscale copy whose shorter side is scaled
down to this many pixels (never up), so that blur and contrast do not depend on resolution."""

UNDEREXPOSED_LUMA_MAX = 16
"""A pixel with luma (BT.601, 0-255) at or below this counts as under-exposed."""

OVEREXPOSED_LUMA_MIN = 240
"""A pixel with luma (BT.601, 0-255) at or above this counts as over-exposed."""


class QualityMeasurements(BaseModel):
    """What the OOD service's image-quality gate reads, measured on the stored image."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    width: float = Field(gt=0, description="px, of the stored image")
    height: float = Field(gt=0, description="px, of the stored image")
    brightness_mean: float = Field(ge=0, le=255, description="mean luma, 0-255")
    underexposed_fraction: float = Field(ge=0, le=1, description="share of pixels at luma <= 16")
    overexposed_fraction: float = Field(ge=0, le=1, description="share of pixels at luma >= 240")
    laplacian_variance: float = Field(ge=0, description="variance of the 4-neighbour Laplacian of luma")
    contrast_std: float = Field(ge=0, description="standard deviation of luma, 0-255")
    dominant_fraction: float = Field(
        ge=0, le=1, description="share of pixels within +-4 luma levels of the most common level"
    )
    colourfulness: float = Field(ge=0, description="Hasler-Suesstrunk colourfulness, 0 for grey images")

    def to_wire(self) -> dict[str, float]:
        """The `quality` dict of an OodScoreRequest."""
        return {name: float(value) for name, value in self.model_dump().items()}
