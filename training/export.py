"""PyTorch checkpoint -> ONNX with three outputs (logits, embedding, feature_map), verified
against ONNX Runtime on real images before anything is written to a bundle."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from training.config import TrainConfig
from training.models import LiteBiLSTM, LiteClassifier, build_model

log = logging.getLogger("training.export")

OPSET = 17
MAX_ABS_DIFF = 1e-4
OUTPUT_NAMES = ("logits", "embedding", "feature_map")


class ExportMismatchError(Exception):
    """ONNX Runtime disagrees with PyTorch beyond the allowed tolerance."""


def load_checkpoint(path: Path | str) -> tuple[LiteClassifier | LiteBiLSTM, TrainConfig, list[str]]:
    """Rebuild the model of a training checkpoint in eval mode (no pretrained download needed)."""
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**ckpt["config"])
    classes: list[str] = ckpt["classes"]
    model = build_model(
        cfg.arch, len(classes), cfg.image_size, False, cfg.dropout, cfg.lstm_hidden, cfg.lstm_layers
    )
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg, classes


def export_onnx(model: torch.nn.Module, image_size: int, path: Path) -> None:
    """Write an opset-17 graph with a dynamic batch axis."""
    dummy = torch.zeros(1, 3, image_size, image_size)
    torch.onnx.export(
        model.eval(),
        (dummy,),
        str(path),
        input_names=["image"],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={"image": {0: "N"}, **{name: {0: "N"} for name in OUTPUT_NAMES}},
        opset_version=OPSET,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))


def verify_onnx(model: torch.nn.Module, path: Path, batch: NDArray[np.float32]) -> float:
    """Max |ORT - PyTorch| over all three outputs on `batch`; raises ExportMismatchError past 1e-4."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_out = session.run(list(OUTPUT_NAMES), {"image": batch})
    with torch.inference_mode():
        torch_out = [t.numpy() for t in model.eval()(torch.from_numpy(batch))]
    worst = max(float(np.abs(a - b).max()) for a, b in zip(ort_out, torch_out, strict=True))
    log.info("ONNX Runtime vs PyTorch on %d images: max abs diff %.2e", len(batch), worst)
    if not worst <= MAX_ABS_DIFF:
        raise ExportMismatchError(f"ONNX Runtime differs from PyTorch by {worst:.3e} > {MAX_ABS_DIFF:g}")
    return worst


def classifier_weights(model: torch.nn.Module) -> NDArray[np.float32] | None:
    """The linear head's weight (classes x channels) for class-activation maps, if linear."""
    if isinstance(model, LiteClassifier):
        return model.fc.weight.detach().numpy().astype(np.float32)
    return None


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization of the weights of every supported op (Conv, MatMul, Gemm, LSTM);
    activations are quantized on the fly at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.WARNING)  # the quantizer logs one INFO line per tensor
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(previous)
