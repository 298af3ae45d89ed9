"""``small_cnn``, plus the conv-BN and weight-init helpers that the CIFAR models share."""

from __future__ import annotations

import torch
from torch import nn

from . import register


def init_weights(model: nn.Module) -> None:
    """He-normal convolutions, identity BatchNorm; linear layers keep torch's default init."""
    # fan_out keeps the backward signal's variance stable; it is also the init of He et al.'s and
    # Huang et al.'s reference code (std sqrt(2 / (k * k * out_channels))).
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """3x3 convolution then BatchNorm, as a list to splice into an ``nn.Sequential``."""
    # No conv bias: the following BatchNorm's shift makes it redundant.
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers (``width``, 2x and 4x channels), a max-pool after each of the
    first two, global average pool, linear head (any HxW >= 4). Pooling early keeps it at ~7.5M
    multiply-adds per 28x28 image at width 32, so a CPU trains Fashion-MNIST in about a minute
    per epoch; width 16 costs a quarter of that."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(in_channels, width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *conv_bn(width, 2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *conv_bn(2 * width, 4 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.fc = nn.Linear(4 * width, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@register("small_cnn", family="small")
def small_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return SmallCNN(num_classes, in_channels)


@register("tiny_cnn", family="small")
def tiny_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """``small_cnn`` at half the width: the README demo's model, all of Fashion-MNIST in minutes."""
    return SmallCNN(num_classes, in_channels, width=16)
