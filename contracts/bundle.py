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


OodScoreName = Literal["msp", "entropy", "energy", "mahalanobis", "knn"]


class OodDetector(_Strict):
    """The full OOD detector (fitted by `make fit-ood`). Every score is oriented so that HIGHER
    means MORE out-of-distribution (msp is stored as 1 - max softmax probability, energy as
    -T*logsumexp(logits/T)). An image is rejected when ANY score in `rule` exceeds its threshold.

    `stats_file` (npz in the bundle) holds: `class_means` (K x D), `precision` (D x D, the inverse
    shared covariance), `knn_reference` (M x D, L2-normalised train embeddings), all float32, fitted
    on the train split's embeddings of the model whose sha256 is `fitted_on_sha256`."""

    stats_file: str = "ood_stats.npz"
    fitted_on_sha256: str
    knn_k: int = Field(ge=1)
    rule: tuple[OodScoreName, ...] = Field(min_length=1)
    target_acceptance: float = Field(gt=0.0, lt=1.0)
    thresholds: dict[str, float] = Field(description="score -> threshold at target_acceptance")
    acceptance_grid: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="other acceptance targets (e.g. '0.90', '0.99') -> rule thresholds, so a "
        "tenant can choose its strictness without refitting",
    )
    selection: str = Field(default="", description="how the rule was chosen, in words")

    @model_validator(mode="after")
    def _rule_has_thresholds(self) -> OodDetector:
        missing = [name for name in self.rule if name not in self.thresholds]
        if missing:
            raise ValueError(f"ood_detector.thresholds lacks the rule's scores: {missing}")
        return self


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
    ood_detector: OodDetector | None = Field(
        default=None, description="the full OOD detector; None = only the seed dual criterion"
    )

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
        if self.ood_detector and self.ood_detector.fitted_on_sha256 != self.onnx_sha256:
            raise ValueError("ood_detector was fitted on a different model (fitted_on_sha256 != onnx_sha256)")
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
