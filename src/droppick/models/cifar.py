"""CIFAR architectures of the paper's Tables 5 and 6 (32x32 inputs, 3x3 stems, no early pooling).

* ``resnet20/32/44/56/110``: He et al. (2016a, Sec. 4.2), basic blocks, option-A shortcuts.
* ``resnet164``: He et al. (2016b, "Identity Mappings"), pre-activation bottleneck blocks.
* ``densenet_bc_100``: Huang et al. (2017), DenseNet-BC with k = 12.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from . import register
from .small import conv_bn, init_weights


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a parameter-free shortcut (He et al. 2016, option A)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcuts can only widen: {in_channels} -> {out_channels} channels")
        conv1, self.bn1 = conv_bn(in_channels, out_channels, stride)
        conv2, self.bn2 = conv_bn(out_channels, out_channels)
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
        self.stem = nn.Sequential(*conv_bn(in_channels, 16), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        width = 16
        for stage, out_width in enumerate((16, 32, 64)):
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(width, out_width, stride))
                width = out_width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """He et al. (2016, Sec. 4.2) CIFAR ResNet; ``depth`` must be 6n+2 with n >= 1."""
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes, in_channels)


# Table 6 of He et al. (2016a), in parameters.
for _depth, _published in ((20, 270_000), (32, 460_000), (44, 660_000), (56, 850_000), (110, 1_700_000)):
    register(f"resnet{_depth}", family="cifar", published_params=_published)(partial(cifar_resnet, _depth))
del _depth, _published
# The smallest of the family (n = 1, 78k parameters): CPU-scale experiments such as experiments/.
register("resnet8", family="cifar")(partial(cifar_resnet, 8))


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> list[nn.Module]:
    """The pre-activation unit shared by ResNet-164 and DenseNet-BC: BN, ReLU, then a bias-free conv."""
    return [
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
    ]


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3 (strided), BN-ReLU-conv1x1 to ``4 * width`` channels, plus a
    shortcut that is the identity, or a strided 1x1 projection where the shape changes."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = self.expansion * width
        # The first BN-ReLU is kept apart from the rest of the branch because a projection
        # shortcut reads its output too (below).
        self.preact = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            *_bn_relu_conv(width, width, 3, stride),
            *_bn_relu_conv(width, out_channels, 1),
        )
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        # As in He et al.'s code (resnet-1k-layers, "both_preact"), a projection sees the
        # pre-activated input; an identity shortcut carries x untouched, which is the point of
        # pre-activation. In the very first block this BN-ReLU doubles as the stem's, so the
        # network equals the reference one (stem conv-BN-ReLU, first block without pre-activation).
        shortcut = x if self.projection is None else self.projection(pre)
        return self.branch(pre) + shortcut


class PreActResNet(nn.Module):
    """Pre-activation bottleneck ResNet of depth 9n+2 for CIFAR: 3x3 conv to 16 channels, three
    stages of n bottlenecks (widths 16/32/64, outputs 64/128/256), BN-ReLU, GAP, linear."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        # No BN after the stem: the first block's pre-activation normalises its output.
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        channels = 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(blocks_per_stage):
                layers.append(PreActBottleneck(channels, width, stride=2 if stage > 0 and i == 0 else 1))
                channels = PreActBottleneck.expansion * width
        self.layers = nn.Sequential(*layers)
        # Pre-activation blocks end on a convolution, so the head normalises before pooling.
        self.head = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.layers(self.stem(x))).flatten(1))


@register("resnet164", family="cifar", published_params=1_700_000)  # He et al. (2016b), Table 3
def resnet164(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return PreActResNet((164 - 2) // 9, num_classes, in_channels)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 to ``4 * growth_rate`` channels, BN-ReLU-conv3x3 to ``growth_rate``,
    concatenated to the input (the "B" of DenseNet-BC is this 1x1 bottleneck)."""

    def __init__(self, in_channels: int, growth_rate: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            *_bn_relu_conv(in_channels, 4 * growth_rate, 1),
            *_bn_relu_conv(4 * growth_rate, growth_rate, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Re-concatenating per layer costs O(L^2) copies; at CIFAR sizes that is cheaper to read
        # than torchvision's list-of-features bookkeeping and gives the same network.
        return torch.cat([x, self.branch(x)], 1)


class DenseNetBC(nn.Module):
    """DenseNet-BC for CIFAR (Huang et al. 2017): 3x3 conv to ``2 * growth_rate`` channels, three
    dense blocks of (depth - 4) / 6 layers, transitions (BN-ReLU-conv1x1 shrinking the channels by
    ``compression``, 2x2 average pool) between them, BN-ReLU, GAP, linear."""

    def __init__(
        self,
        depth: int = 100,
        growth_rate: int = 12,
        compression: float = 0.5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        # Each layer holds two convolutions; the stem, two transitions and the classifier make 4.
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"DenseNet-BC depth must be 6n+4 with n >= 1 (10, 16, ..., 100), got {depth}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression}")
        channels = 2 * growth_rate
        features: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)]
        for block in range(3):
            for _ in range((depth - 4) // 6):
                features.append(DenseLayer(channels, growth_rate))
                channels += growth_rate
            if block < 2:
                out_channels = int(channels * compression)  # floor, as in the reference code
                features += [*_bn_relu_conv(channels, out_channels, 1), nn.AvgPool2d(2)]
                channels = out_channels
        features += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*features)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@register("densenet_bc_100", family="cifar", published_params=800_000)  # Huang et al. (2017), Table 2
def densenet_bc_100(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    return DenseNetBC(100, 12, 0.5, num_classes, in_channels)
