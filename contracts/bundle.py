"""The model-bundle manifest (`bundle.json`): the contract between training and serving.

Training writes it; every service only reads it. Serving code never repeats a constant held here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TriageLevel = Literal["urgent", "routine", "monitor"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassInfo(_Strict):
    """One condition the model predicts."""

    code: str = Field(min_length=1, description="short label, e.g. 'mel'")
    display_name: str = Field(min_length=1)
    malignant: bool = Field(description="counts towards the urgent (suspected malignant) score")


class Preprocessing(_Strict):
    """Every constant needed to turn an RGB image into the model's input tensor."""

    resize_policy: Literal["shorter_side_center_crop"] = "shorter_side_center_crop"
    resize_shorter_to: int = Field(gt=0, description="shorter side is scaled to this many px")
    crop_size: int = Field(gt=0, description="square centre crop, px; the model's input size")
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    channel_order: Literal["RGB"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    scale: float = Field(gt=0, description="pixel values are multiplied by this first (1/255)")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in value):
            raise ValueError("std values must be > 0")
        return value

    @model_validator(mode="after")
    def _crop_fits(self) -> Preprocessing:
        if self.crop_size > self.resize_shorter_to:
            raise ValueError("crop_size must not exceed resize_shorter_to")
        return self


class ModelIO(_Strict):
    """Names and shapes of the ONNX graph's input and outputs."""

    input_name: str = "image"
    input_shape: tuple[int | None, int, int, int] = Field(description="N (None = dynamic), C, H, W")
    input_dtype: Literal["float32"] = "float32"
    logits: str = "logits"
    embedding: str = "embedding"
    feature_map: str = "feature_map"
    embedding_dim: int = Field(gt=0)
    feature_map_channels: int = Field(gt=0)
    classifier: Literal["linear_on_pooled_features", "bilstm_on_patches"] = "linear_on_pooled_features"
    cam_weights_file: str | None = Field(
        default=None,
        description="npz with the linear classifier's weight (C x channels) and bias, for "
        "class-activation maps; None when the head is not linear on pooled features",
    )


class TriageThresholds(_Strict):
    """Triage on P(malignant) = sum of the calibrated probabilities of the malignant classes:
    urgent if >= urgent_malignant_probability, routine if >= routine_malignant_probability,
    else monitor. Both thresholds are chosen on the validation split for a target sensitivity."""

    urgent_malignant_probability: float = Field(ge=0.0, le=1.0)
    routine_malignant_probability: float = Field(ge=0.0, le=1.0)
    urgent_target_sensitivity: float = Field(gt=0.0, le=1.0)
    routine_target_sensitivity: float = Field(gt=0.0, le=1.0)
    val_urgent_sensitivity: float = Field(ge=0.0, le=1.0)
    val_urgent_specificity: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> TriageThresholds:
        if self.routine_malignant_probability > self.urgent_malignant_probability:
            raise ValueError("routine threshold must not exceed the urgent threshold")
        return self


class Conformal(_Strict):
    """Split-conformal prediction (LAC score 1 - p_true) fitted on the validation split."""

    method: Literal["lac"] = "lac"
    target_coverage: float = Field(gt=0.0, lt=1.0)
    quantile: float = Field(ge=0.0, le=1.0, description="include class if 1 - p <= quantile")


class OodDualCriterion(_Strict):
    """Seed OOD rule: reject if max softmax prob < msp_min OR normalized entropy > entropy_max."""

    msp_min: float = Field(ge=0.0, le=1.0)
    entropy_max: float = Field(ge=0.0, le=1.0)
    val_acceptance: float = Field(ge=0.0, le=1.0)


class Provenance(_Strict):
    """Where the bundle came from, so a result can be traced back to code and data."""

    training_commit: str
    created_at: str
    config: dict[str, object]
    library_versions: dict[str, str]
    data: str


class BundleManifest(_Strict):
    """`bundle.json`: a self-describing model bundle."""

    format_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    architecture: str
    onnx_file: str = "model.onnx"
    onnx_sha256: str
    opset: int = Field(ge=17)
    classes: tuple[ClassInfo, ...] = Field(min_length=2)
    preprocessing: Preprocessing
    io: ModelIO
    temperature: float = Field(gt=0.0)
    triage: TriageThresholds
    conformal: Conformal
    ood: OodDualCriterion
    provenance: Provenance
    metrics: dict[str, dict[str, object]] = Field(
        default_factory=dict, description="split name -> metrics (e.g. 'test')"
    )
    quantized: bool = False

    @field_validator("onnx_sha256")
    @classmethod
    def _sha_hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("onnx_sha256 must be 64 lowercase hex characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        codes = [c.code for c in self.classes]
        if len(set(codes)) != len(codes):
            raise ValueError(f"class codes must be unique, got {codes}")
        if not any(c.malignant for c in self.classes):
            raise ValueError("at least one class must be marked malignant for triage")
        _, channels, height, width = self.io.input_shape
        if channels != 3 or height != width or height != self.preprocessing.crop_size:
            raise ValueError("io.input_shape must be (N, 3, crop_size, crop_size) to match preprocessing")
        return self

    @property
    def class_codes(self) -> tuple[str, ...]:
        """Class codes in output order."""
        return tuple(c.code for c in self.classes)

    @property
    def malignant_indices(self) -> tuple[int, ...]:
        """Output indices of the malignant classes."""
        return tuple(i for i, c in enumerate(self.classes) if c.malignant)
