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


class ColourConstancy(_Strict):
    """Colour constancy applied to the resized image before normalization (Shades of Gray,
    Finlayson & Trezzi 2004): the illuminant is estimated per channel as the Minkowski p-norm mean
    of the pixel values, and each channel is scaled so the illuminant becomes neutral grey with
    the same mean intensity. p=1 is Grey World, p->inf is max-RGB; Barata et al. (2015) found p=6
    best for dermoscopy."""

    method: Literal["shades_of_gray"] = "shades_of_gray"
    power: float = Field(default=6.0, ge=1.0, le=32.0)


class Preprocessing(_Strict):
    """Every constant needed to turn an RGB image into the model's input tensor.

    Two resize policies:
    - `shorter_side_center_crop` (format 1 bundles): scale the shorter side to
      `resize_shorter_to`, take the centred `crop_size` square (cuts the long side's borders);
    - `letterbox` (format 2): optionally turn a portrait image to landscape (dermoscopy has no
      canonical orientation), scale it to fit inside an `input_width` x `input_height` canvas
      keeping its aspect ratio, and fill the rest of the canvas with `pad_value`: the whole image
      is always seen.
    """

    resize_policy: Literal["shorter_side_center_crop", "letterbox"] = "shorter_side_center_crop"
    resize_shorter_to: int | None = Field(
        default=None, gt=0, description="shorter_side_center_crop: shorter side is scaled to this many px"
    )
    crop_size: int | None = Field(
        default=None, gt=0, description="shorter_side_center_crop: square centre crop, px"
    )
    input_width: int | None = Field(default=None, gt=0, description="letterbox: canvas width, px")
    input_height: int | None = Field(default=None, gt=0, description="letterbox: canvas height, px")
    orient_landscape: bool = Field(
        default=False, description="letterbox: rotate portrait images 90 degrees clockwise first"
    )
    pad_value: float = Field(
        default=0.0, description="letterbox: value of the padding in the normalized tensor"
    )
    colour_constancy: ColourConstancy | None = Field(
        default=None, description="applied to the resized image before normalization; None = off"
    )
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
    def _policy_complete(self) -> Preprocessing:
        if self.resize_policy == "shorter_side_center_crop":
            if self.resize_shorter_to is None or self.crop_size is None:
                raise ValueError("shorter_side_center_crop needs resize_shorter_to and crop_size")
            if self.crop_size > self.resize_shorter_to:
                raise ValueError("crop_size must not exceed resize_shorter_to")
        elif self.input_width is None or self.input_height is None:
            raise ValueError("letterbox needs input_width and input_height")
        return self

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of the model's input tensor."""
        if self.resize_policy == "letterbox":
            assert self.input_height is not None and self.input_width is not None
            return self.input_height, self.input_width
        assert self.crop_size is not None
        return self.crop_size, self.crop_size


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
    metadata_input: str | None = Field(
        default=None,
        description="name of the graph's second input, the encoded clinical metadata (N x "
        "metadata.dim), when the bundle has a `metadata` section",
    )


class MetadataEncoding(_Strict):
    """Optional clinical metadata fused into the model (age, sex, body site), and how a request's
    values become the model's `metadata` input vector. Every field may be missing: the model was
    trained with each field dropped at random, so an image alone is a valid input and the vector
    then encodes "unknown" for all three.

    Layout: [age / age_scale, age_missing, one-hot(sex_values)..., sex_missing,
    one-hot(site_values)..., site_missing]. A value outside the vocabulary counts as missing."""

    age_scale: float = Field(gt=0.0)
    sex_values: tuple[str, ...] = Field(min_length=1)
    site_values: tuple[str, ...] = Field(min_length=1)
    site_aliases: dict[str, str] = Field(
        default_factory=dict, description="other spellings of a site -> its vocabulary value"
    )
    val_gain: dict[str, float] = Field(
        default_factory=dict,
        description="val metrics with metadata minus the same model with every field missing",
    )

    @property
    def dim(self) -> int:
        """Length of the encoded vector."""
        return 2 + len(self.sex_values) + 1 + len(self.site_values) + 1


class Robustness(_Strict):
    """Where the evaluations the model card is built from live in the bundle, with headlines."""

    shift_metrics_file: str = Field(description="JSON written by `make eval-shift`")
    fairness_metrics_file: str = Field(description="JSON of the skin-tone (ITA) and subgroup tables")
    worst_shift: str = Field(description="the benchmark shift with the lowest melanoma-vs-nevus AUC")
    worst_shift_mel_nv_auc: float = Field(ge=0.0, le=1.0)
    worst_shift_urgent_sensitivity: float = Field(ge=0.0, le=1.0)


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


OodScoreName = Literal["msp", "entropy", "energy", "mahalanobis", "knn", "oe"]


class OodDetector(_Strict):
    """The full OOD detector (fitted by `make fit-ood`). Every score is oriented so that HIGHER
    means MORE out-of-distribution (msp is stored as 1 - max softmax probability, energy as
    -T*logsumexp(logits/T)). An image is rejected when ANY score in `rule` exceeds its threshold.

    `stats_file` (npz in the bundle) holds: `class_means` (K x D), `precision` (D x D, the inverse
    shared covariance), `knn_reference` (M x D, L2-normalised train embeddings), all float32, fitted
    on the train split's embeddings of the model whose sha256 is `fitted_on_sha256`. When the rule
    uses `oe`, it also holds `oe_weight` (D) and `oe_bias` (1): the outlier-exposure head trained
    with the network (dermoscopy vs not), whose logit w.e + b is the `oe` score."""

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


# Fields a format-2 manifest must state explicitly: a 2.x bundle that silently fell back to
# format-1 defaults would serve without the preprocessing its model was trained with. null is a
# statement too (an image-only model; no colour constancy; a bundle whose OOD detector and
# robustness evaluation are still being fitted, as `make train` writes it between its steps).
FORMAT_2_REQUIRED = ("metadata", "robustness", "ood_detector")


class BundleManifest(_Strict):
    """`bundle.json`: a self-describing model bundle.

    Format 1 (bundles 1.x): centre-crop preprocessing, image-only input. Format 2 (bundles 2.x and
    later): letterboxed input with explicit colour constancy, optional metadata fusion, the fitted
    OOD detector and the robustness/fairness evaluation are all required."""

    format_version: Literal[1, 2] = 1
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
    metadata: MetadataEncoding | None = Field(
        default=None, description="format 2: clinical metadata fusion; None = image-only model"
    )
    robustness: Robustness | None = Field(
        default=None, description="format 2: the shift benchmark and fairness evaluation"
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
        if channels != 3 or (height, width) != self.preprocessing.input_hw:
            raise ValueError("io.input_shape must be (N, 3, H, W) with the preprocessing's input size")
        if (self.metadata is None) != (self.io.metadata_input is None):
            raise ValueError("io.metadata_input and metadata must be given together")
        self._format_rules()
        return self

    def _format_rules(self) -> None:
        major = int(self.version.split(".")[0])
        if major >= 2 and self.format_version < 2:
            raise ValueError(f"a {self.version} bundle must declare format_version 2")
        if self.format_version < 2:
            if self.preprocessing.resize_policy != "shorter_side_center_crop":
                raise ValueError("format_version 1 bundles use shorter_side_center_crop preprocessing")
            return
        missing = [name for name in FORMAT_2_REQUIRED if name not in self.model_fields_set]
        if "colour_constancy" not in self.preprocessing.model_fields_set:
            missing.append("preprocessing.colour_constancy")
        if missing:
            raise ValueError(f"format_version 2 manifests must state {missing}")
        if self.preprocessing.resize_policy != "letterbox":
            raise ValueError("format_version 2 bundles use letterbox preprocessing (the whole image)")

    @property
    def class_codes(self) -> tuple[str, ...]:
        """Class codes in output order."""
        return tuple(c.code for c in self.classes)

    @property
    def malignant_indices(self) -> tuple[int, ...]:
        """Output indices of the malignant classes."""
        return tuple(i for i, c in enumerate(self.classes) if c.malignant)
