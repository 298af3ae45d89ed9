"""Image classifiers for droppick and a name -> constructor registry.

Model construction initialises weights from the global torch RNG, as torch.nn does;
callers that need reproducibility wrap ``build_model`` in ``torch.random.fork_rng``
after seeding.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODELS",
    "BasicBlock",
    "CifarResNet",
    "SmallCNN",
    "build_model",
    "cifar_resnet",
    "count_parameters",
    "list_models",
    "register",
]

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a ``(num_classes, in_channels) -> nn.Module`` constructor to MODELS."""

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is already registered; pick another name")
        MODELS[name] = factory
        return factory

    return add


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def build_model(name: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Instantiate the registered model ``name``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def _init_weights(model: nn.Module) -> None:
    # torchvision's ResNet convention: fan_out keeps the backward signal's variance stable.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv_bn(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    # No conv bias: the following BatchNorm's shift makes it redundant.
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers, a max-pool after each of the first two, global average pool,
    linear head (any HxW >= 4). Pooling early keeps it at ~7.5M multiply-adds per 28x28 image,
    so a CPU trains Fashion-MNIST in well under a minute per epoch."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(in_channels, 32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *_conv_bn(32, 64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *_conv_bn(64, 128), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.fc = nn.Linear(128, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@register("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    return SmallCNN(num_classes, in_channels)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a parameter-free shortcut (He et al. 2016, option A)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcuts can only widen: {in_channels} -> {out_channels} channels")
        conv1, self.bn1 = _conv_bn(in_channels, out_channels, stride)
        conv2, self.bn2 = _conv_bn(out_channels, out_channels)
        self.conv1, self.conv2 = conv1, conv2
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            # Zero channels appended at the end; which slots hold the zeros is immaterial
            # because the next convolution mixes all channels.
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2: 3x3 conv, three stages of n blocks (16/32/64 channels), GAP, linear."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, 16), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        width = 16
        for stage, out_width in enumerate((16, 32, 64)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(width, out_width, stride))
                width = out_width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """He et al. (2016, Sec. 4.2) CIFAR ResNet; ``depth`` must be 6n+2 with n >= 1."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes, in_channels)


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}")(partial(cifar_resnet, _depth))
del _depth
