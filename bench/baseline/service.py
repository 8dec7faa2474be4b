"""The service a user would write instead of running the fleet: one FastAPI process, PyTorch eager,
the same architecture (EfficientNet-Lite0, 7 classes) at 224 x 224, `channels_last`,
`torch.inference_mode()`, torch's threads pinned (BASELINE_THREADS, default: the usable cores),
one image per forward pass. Only for `bench.suite`: it stores nothing, has no queue, no OOD gate,
no auth, and its weights are the ImageNet backbone with an untrained head (speed, not accuracy).

    uvicorn bench.baseline.service:app --port 8100
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, UploadFile
from PIL import Image, UnidentifiedImageError

from training.models import build_model

INPUT_SIDE = 224
CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def pinned_threads() -> int:
    """BASELINE_THREADS, else the cores this process may use."""
    return int(os.environ.get("BASELINE_THREADS") or len(os.sched_getaffinity(0)))


torch.set_num_threads(pinned_threads())
model = build_model("effnet_lite0", len(CLASSES), INPUT_SIDE, pretrained=True, dropout=0.0)
model = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub
app = FastAPI(title="SkinTriage bench baseline (PyTorch eager)")


def tensor(data: bytes) -> torch.Tensor:
    """Decoded, resized to 224 x 224, ImageNet-normalised, NCHW in channels_last memory."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB").resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise HTTPException(status_code=422, detail="not an image") from exc
    array = (np.asarray(rgb, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    batch = torch.from_numpy(array.transpose(2, 0, 1)[None].copy())
    return batch.contiguous(memory_format=torch.channels_last)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """The model is loaded (it is loaded at import)."""
    return {"status": "ok"}


@app.post("/predict")
def predict(file: UploadFile) -> dict[str, object]:
    """Class probabilities for one uploaded image."""
    batch = tensor(file.file.read())
    with torch.inference_mode():
        output = model(batch)  # (logits, embedding, feature_map): the training model's outputs
        logits = output[0] if isinstance(output, tuple) else output
        probs = torch.softmax(logits.float(), dim=1)[0].tolist()
    return {
        "probabilities": dict(zip(CLASSES, probs, strict=True)),
        "top_class": CLASSES[int(np.argmax(probs))],
    }
