"""ImageNet architectures of the paper's Table 7 (224x224 inputs, though any side >= 32 works).

ResNet-18/50/101/152 and DenseNet-121/169 are torchvision's definitions, built with
``weights=None`` (random init, nothing is downloaded); torchvision is imported only when one of
them is built, so droppick does not need it otherwise. MobileNet-V1 is not in torchvision and is
defined here.

``in_channels``: torchvision's models take 3 channels. For any other number the first
convolution is replaced by one of the same shape apart from its input channels, initialised the
way torchvision initialises that model's convolutions; the rest of the network is untouched, so
parameter counts differ only by that layer's ``(in_channels - 3) * out_channels * k * k``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from . import register
from .small import init_weights

# name -> (dotted path of the first convolution, fan mode of torchvision's kaiming_normal_ init,
#          parameter count at 1000 classes as documented by torchvision)
_TORCHVISION = {
    "resnet18": ("conv1", "fan_out", 11_689_512),
    "resnet50": ("conv1", "fan_out", 25_557_032),
    "resnet101": ("conv1", "fan_out", 44_549_160),
    "resnet152": ("conv1", "fan_out", 60_192_808),
    "densenet121": ("features.conv0", "fan_in", 7_978_856),
    "densenet169": ("features.conv0", "fan_in", 14_149_480),
}


def _replace_first_conv(model: nn.Module, path: str, in_channels: int, fan_mode: str) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path)
    old = getattr(parent, attr)
    new = nn.Conv2d(
        in_channels, old.out_channels, old.kernel_size,
        stride=old.stride, padding=old.padding, bias=old.bias is not None,
    )  # fmt: skip
    nn.init.kaiming_normal_(new.weight, mode=fan_mode, nonlinearity="relu")
    setattr(parent, attr, new)


def _torchvision_model(
    arch: str, first_conv: str, fan_mode: str, num_classes: int = 1000, in_channels: int = 3
) -> nn.Module:
    try:
        import torchvision
    except ImportError as err:
        raise ImportError(f"model {arch!r} is torchvision's; install torchvision to build it") from err
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, first_conv, in_channels, fan_mode)
    return model


for _arch, (_first_conv, _fan_mode, _published) in _TORCHVISION.items():
    register(_arch, family="imagenet", published_params=_published)(
        partial(_torchvision_model, _arch, _first_conv, _fan_mode)
    )
del _arch, _first_conv, _fan_mode, _published


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


# (output channels, stride) of MobileNet-V1's 13 depthwise-separable blocks, Table 1 of Howard et
# al. (2017). The table prints "s2" for the last depthwise conv too, but gives 7x7 as both its
# input and output size, so its stride is 1, as in the reference TensorFlow code (_CONV_DEFS).
_MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    *((512, 1),) * 5,
    (1024, 2), (1024, 1),
)  # fmt: skip


class MobileNetV1(nn.Module):
    """MobileNet-V1, width multiplier 1.0: 3x3 conv (stride 2) to 32 channels, 13 blocks of
    depthwise 3x3 conv-BN-ReLU then pointwise 1x1 conv-BN-ReLU, global average pool, linear."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        layers = _conv_bn_relu(in_channels, 32, 3, stride=2)
        channels = 32
        for out_channels, stride in _MOBILENET_V1_BLOCKS:
            layers += _conv_bn_relu(channels, channels, 3, stride, groups=channels)  # one filter per channel
            layers += _conv_bn_relu(channels, out_channels, 1)  # mixes channels
            channels = out_channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(channels, num_classes)
        # Same convention as the other droppick models; every conv feeds a BN, so the (small)
        # fan_out scale that kaiming_normal_ gives the depthwise convs does not matter.
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@register("mobilenet_v1", family="imagenet", published_params=4_200_000)  # Howard et al. (2017), Table 8
def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    return MobileNetV1(num_classes, in_channels)
