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
from training.models import LiteBiLSTM, LiteClassifier

log = logging.getLogger("training.export")

OPSET = 17
MAX_ABS_DIFF = 1e-4
OUTPUT_NAMES = ("logits", "embedding", "feature_map")
METADATA_INPUT = "metadata"


class ExportMismatchError(Exception):
    """ONNX Runtime disagrees with PyTorch beyond the allowed tolerance."""


def load_checkpoint(path: Path | str) -> tuple[LiteClassifier | LiteBiLSTM, TrainConfig, list[str]]:
    """Rebuild the model of a training checkpoint in eval mode (no pretrained download needed)."""
    from training.train import build_for  # training imports this module; import late

    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**ckpt["config"])
    classes: list[str] = ckpt["classes"]
    model = build_for(cfg, len(classes), pretrained=False)
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg, classes


def export_onnx(model: torch.nn.Module, input_hw: tuple[int, int] | int, path: Path) -> None:
    """Write an opset-17 graph with a dynamic batch axis; a model that fuses metadata gets a
    second input, `metadata` (N x metadata_dim)."""
    height, width = (input_hw, input_hw) if isinstance(input_hw, int) else input_hw
    inputs: tuple[torch.Tensor, ...] = (torch.zeros(1, 3, height, width),)
    names = ["image"]
    metadata_dim = int(getattr(model, "metadata_dim", 0))
    if metadata_dim:
        inputs += (torch.zeros(1, metadata_dim),)
        names.append(METADATA_INPUT)
    torch.onnx.export(
        model.eval(),
        inputs,
        str(path),
        input_names=names,
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={**{n: {0: "N"} for n in names}, **{name: {0: "N"} for name in OUTPUT_NAMES}},
        opset_version=OPSET,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))


def verify_onnx(
    model: torch.nn.Module,
    path: Path,
    batch: NDArray[np.float32],
    metadata: NDArray[np.float32] | None = None,
) -> float:
    """Max |ORT - PyTorch| over all three outputs on `batch` (and its metadata, for a model that
    fuses it); raises ExportMismatchError past 1e-4."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"image": batch}
    if metadata is not None:
        feeds[METADATA_INPUT] = metadata
    ort_out = session.run(list(OUTPUT_NAMES), feeds)
    with torch.inference_mode():
        meta = torch.from_numpy(metadata) if metadata is not None else None
        torch_out = [t.numpy() for t in model.eval()(torch.from_numpy(batch), meta)]
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


def outlier_head(model: torch.nn.Module) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """(weight (D,), bias (1,)) of the outlier-exposure head, when the model has one."""
    if isinstance(model, LiteClassifier) and model.oe_head is not None:
        weight = model.oe_head.weight.detach().numpy().reshape(-1).astype(np.float32)
        bias = model.oe_head.bias.detach().numpy().reshape(1).astype(np.float32)
        return weight, bias
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
