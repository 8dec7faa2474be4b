"""Load a bundle into ONNX Runtime and turn images into predictions. Used by the services and by
training's evaluation, so both see the same preprocessing and post-processing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from contracts.bundle import BundleManifest
from contracts.reports import HeatmapSource, ModelRef, Prediction
from model_bundle.heatmap import class_activation_map, heatmap_png, heatmap_source
from model_bundle.loader import load_manifest
from model_bundle.metadata import encode_metadata
from model_bundle.preprocessing import placement, preprocess
from model_bundle.triage import conformal_set, malignant_probability, softmax, triage_level


@dataclass(frozen=True)
class ClinicalContext:
    """What a request may say about the patient besides the image (all optional). A bundle that
    fuses metadata encodes these; an image-only bundle ignores them."""

    age: float | None = None
    sex: str | None = None
    body_site: str | None = None


@dataclass(frozen=True)
class RawOutput:
    """The network's three outputs for one image."""

    logits: NDArray[np.float32]
    embedding: NDArray[np.float32]
    feature_map: NDArray[np.float32]


class Predictor:
    """One ONNX Runtime session over one bundle; build once per process."""

    def __init__(self, bundle_dir: Path | str, intra_op_threads: int = 1, verify_hash: bool = True) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest: BundleManifest = load_manifest(self.bundle_dir, verify_hash=verify_hash)
        options = ort.SessionOptions()
        # ORT otherwise starts a thread per core in every worker process and they fight.
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.bundle_dir / self.manifest.onnx_file), options, providers=["CPUExecutionProvider"]
        )
        io = self.manifest.io
        self._outputs = [io.logits, io.embedding, io.feature_map]
        self._cam_weights: NDArray[np.float32] | None = None
        if io.cam_weights_file:
            with np.load(self.bundle_dir / io.cam_weights_file) as cam:
                self._cam_weights = cam["weight"].astype(np.float32)

    @property
    def model_ref(self) -> ModelRef:
        """Name, version and hash of the served model."""
        m = self.manifest
        return ModelRef(name=m.name, version=m.version, sha256=m.onnx_sha256)

    def tensor(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """Stack the bundle-preprocessed images into an NCHW batch."""
        return np.stack([preprocess(img, self.manifest.preprocessing) for img in images])

    def metadata_tensor(
        self, count: int, context: Sequence[ClinicalContext | None] | None = None
    ) -> NDArray[np.float32] | None:
        """The encoded metadata batch (count x dim), all-missing where `context` says nothing;
        None for an image-only bundle."""
        spec = self.manifest.metadata
        if spec is None:
            return None
        rows = []
        for i in range(count):
            c = context[i] if context is not None else None
            c = c or ClinicalContext()
            rows.append(encode_metadata(spec, c.age, c.sex, c.body_site))
        return np.stack(rows)

    def feeds(
        self, images: Sequence[Image.Image], context: Sequence[ClinicalContext | None] | None = None
    ) -> dict[str, NDArray[np.float32]]:
        """The ONNX Runtime input dict for a batch: the image tensor, and the metadata when fused."""
        io = self.manifest.io
        inputs = {io.input_name: self.tensor(images)}
        metadata = self.metadata_tensor(len(images), context)
        if metadata is not None and io.metadata_input is not None:
            inputs[io.metadata_input] = metadata
        return inputs

    def run(
        self, images: Sequence[Image.Image], context: Sequence[ClinicalContext | None] | None = None
    ) -> list[RawOutput]:
        """Forward a batch through ONNX Runtime; `context[i]` is image i's clinical metadata."""
        logits, embedding, fmap = self.session.run(self._outputs, self.feeds(images, context))
        return [RawOutput(logits[i], embedding[i], fmap[i]) for i in range(len(images))]

    def probabilities(self, logits: NDArray[np.floating]) -> NDArray[np.float64]:
        """Temperature-calibrated class probabilities."""
        return softmax(logits, self.manifest.temperature)

    def postprocess(self, raw: RawOutput) -> Prediction:
        """Calibrated probabilities, triage level and conformal set for one image."""
        m = self.manifest
        probs = self.probabilities(raw.logits)
        codes = m.class_codes
        p_mal = malignant_probability(probs, m.malignant_indices)
        level, threshold = triage_level(p_mal, m.triage)
        return Prediction(
            probabilities={c: round(float(p), 6) for c, p in zip(codes, probs, strict=True)},
            top_class=codes[int(np.argmax(probs))],
            malignant_probability=round(p_mal, 6),
            triage_level=level,
            triage_threshold=threshold,
            conformal_set=conformal_set(probs, m.conformal, codes),
            conformal_coverage=m.conformal.target_coverage,
            class_display_names={c.code: c.display_name for c in m.classes},
            malignant_classes=[c.code for c in m.classes if c.malignant],
        )

    def _cam(self, raw: RawOutput, class_code: str) -> NDArray[np.float32]:
        index = self.manifest.class_codes.index(class_code)
        return class_activation_map(raw.feature_map, self._cam_weights, index)

    def heatmap(self, raw: RawOutput, class_code: str, width: int, height: int) -> bytes:
        """PNG overlay of the class-activation map for `class_code`, sized to the image."""
        spec = self.manifest.preprocessing
        where = placement(width, height, spec)
        return heatmap_png(self._cam(raw, class_code), width, height, spec.input_hw, where)

    def heatmap_source(self, raw: RawOutput, class_code: str, width: int, height: int) -> HeatmapSource:
        """What `model_bundle.heatmap.render_heatmap` needs to draw `heatmap(...)`'s PNG later:
        the quantised map and where the image lay in the input (a few dozen bytes)."""
        spec = self.manifest.preprocessing
        where = placement(width, height, spec)
        return heatmap_source(self._cam(raw, class_code), width, height, spec.input_hw, where)

    def predict_file(self, path: Path | str) -> Prediction:
        """Convenience API: one image file -> its prediction."""
        with Image.open(path) as img:
            return self.postprocess(self.run([img.convert("RGB")])[0])
