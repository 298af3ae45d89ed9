"""Tests for droppick.models: registry, model_info, parameter counts against the published ones,
output shapes and gradients of every model."""

from __future__ import annotations

import re

import pytest
import torch

from droppick.models import (
    MODELS,
    DenseNetBC,
    build_model,
    cifar_resnet,
    count_parameters,
    list_models,
    model_info,
)

RESNETS = {"resnet8": 8, "resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
CIFAR_OTHERS = ["resnet164", "densenet_bc_100"]
IMAGENET = ["resnet18", "resnet50", "resnet101", "resnet152", "densenet121", "densenet169", "mobilenet_v1"]
ALL_MODELS = sorted(["small_cnn", "tiny_cnn", *RESNETS, *CIFAR_OTHERS, *IMAGENET])
# Table 6 of He et al. (2016), in millions.
PAPER_MILLIONS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}


def _option_a_count(depth: int, in_channels: int, num_classes: int) -> int:
    """Closed form: 3x3 convs without bias, two BN params per channel, parameter-free shortcuts."""
    n = (depth - 2) // 6
    total = 9 * in_channels * 16 + 2 * 16
    previous = 16
    for width in (16, 32, 64):
        total += 9 * previous * width + 9 * width * width + 4 * width
        total += (n - 1) * (2 * 9 * width * width + 4 * width)
        previous = width
    return total + 64 * num_classes + num_classes


def test_registry_lists_all_models() -> None:
    assert list_models() == ALL_MODELS
    assert set(MODELS) == set(list_models())


@pytest.mark.parametrize("lookup", [build_model, model_info])
def test_unknown_model_lists_names(lookup) -> None:
    available = re.escape(", ".join(ALL_MODELS))
    with pytest.raises(ValueError, match=rf"unknown model 'resnet9'; available models: {available}, or timm:NAME "):
        lookup("resnet9")


@pytest.mark.parametrize("depth", [7, 9, 2, 21, 0])
def test_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(depth)


def test_bad_densenet_arguments() -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        DenseNetBC(depth=99)
    with pytest.raises(ValueError, match="compression"):
        DenseNetBC(compression=0.0)


def test_parameter_counts() -> None:
    # Option A shortcuts are parameter-free, so resnet20 has 269,722 parameters, not the
    # often-quoted 272,474 (which includes 1x1 projection shortcuts at the two stage changes).
    exact = {"resnet20": 269_722, "resnet110": 1_727_962}
    for name, depth in RESNETS.items():
        count = count_parameters(build_model(name, num_classes=10, in_channels=3))
        assert count == _option_a_count(depth, 3, 10)
        if name in PAPER_MILLIONS:  # resnet8 is ours, for CPU-scale experiments: no published figure
            assert round(count / 1e6, 2 if count < 1e6 else 1) == PAPER_MILLIONS[name]
        if name in exact:
            assert count == exact[name]
    assert count_parameters(build_model("resnet20", num_classes=7, in_channels=1)) == _option_a_count(20, 1, 7)


def _assert_forward_backward_finite(name: str, channels: int, size: int) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(name, num_classes=10, in_channels=channels)
        x = torch.randn(2, channels, size, size)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.logsumexp(1).sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has non-finite gradients"


@pytest.mark.parametrize("name", sorted(["small_cnn", "tiny_cnn", *RESNETS]))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_forward_backward_finite(name: str, channels: int, size: int) -> None:
    _assert_forward_backward_finite(name, channels, size)


def test_small_cnn_small_inputs() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("small_cnn", num_classes=4, in_channels=2).eval()
        assert model(torch.randn(1, 2, 8, 8)).shape == (1, 4)


# Pinned exact counts with 3 input channels (a regression guard on our definitions; the
# torchvision-backed ones equal torchvision's documented num_params).
EXACT_COUNTS = {
    "resnet18": (1000, 11_689_512), "resnet50": (1000, 25_557_032), "resnet101": (1000, 44_549_160),
    "resnet152": (1000, 60_192_808), "densenet121": (1000, 7_978_856), "densenet169": (1000, 14_149_480),
    "mobilenet_v1": (1000, 4_231_976), "resnet110": (10, 1_727_962), "resnet164": (10, 1_703_258),
    "densenet_bc_100": (10, 769_162),
}
CIFAR100_COUNTS = {"resnet110": 1_733_812, "resnet164": 1_726_388, "densenet_bc_100": 800_032}

# The figures printed in each architecture's paper, in millions, as printed (so rounded to their
# last digit), typed here from the papers, not read from the implementation:
PUBLISHED_MILLIONS = {
    "resnet110": 1.7,          # He et al. 2016a, "Deep Residual Learning", Table 6 (CIFAR-10)
    "resnet164": 1.7,          # He et al. 2016b, "Identity Mappings in Deep Residual Networks", Table 3
    "densenet_bc_100": 0.8,    # Huang et al. 2017, "Densely Connected Convolutional Networks", Table 2 (k=12)
    "mobilenet_v1": 4.2,       # Howard et al. 2017, "MobileNets", Table 8 (1.0 MobileNet-224)
    "densenet121": 8.0,        # Huang et al. 2017, Figure 3 / torchvision's DenseNet-121 (7.98M)
    "resnet50": 25.6,          # widely cited for He et al. 2016a's ResNet-50 (the paper gives FLOPs, not
    "resnet101": 44.5,         # parameters); torchvision's documentation gives the same figures
    "resnet152": 60.2,
    "resnet18": 11.7,
    "densenet169": 14.1,
}


@pytest.mark.parametrize("name", sorted(EXACT_COUNTS))
def test_parameter_counts_match_the_papers(name: str) -> None:
    num_classes, exact = EXACT_COUNTS[name]
    count = count_parameters(build_model(name, num_classes=num_classes, in_channels=3))
    assert count == exact
    millions = PUBLISHED_MILLIONS[name]
    digits = len(str(millions).split(".")[1])
    # DenseNet-BC-100's 0.769M prints as "0.8M": within half a unit of the printed last digit.
    half_unit = 0.5 * 10 ** -digits + 1e-9
    assert abs(count / 1e6 - millions) <= half_unit, f"{count:,} vs the paper's {millions}M"
    reported = model_info(name)["published_params"]  # what `droppick models` reports agrees with the paper too
    assert abs(reported / 1e6 - millions) <= half_unit, f"model_info says {reported:,}, the paper {millions}M"
    if name in CIFAR100_COUNTS:
        assert count_parameters(build_model(name, num_classes=100, in_channels=3)) == CIFAR100_COUNTS[name]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_info(name: str) -> None:
    info = model_info(name)
    family = "small" if name in ("small_cnn", "tiny_cnn") else "imagenet" if name in IMAGENET else "cifar"
    assert info == {
        "name": name,
        "family": family,
        "input_size": {"small": 28, "cifar": 32, "imagenet": 224}[family],
        "published_params": info["published_params"],
    }
    assert (info["published_params"] is None) == (name in ("small_cnn", "tiny_cnn", "resnet8"))


@pytest.mark.parametrize("name,first_conv", [("resnet18", "conv1"), ("densenet121", "features.conv0")])
def test_torchvision_first_conv_takes_in_channels(name: str, first_conv: str) -> None:
    three = build_model(name, num_classes=1000, in_channels=3)
    one = build_model(name, num_classes=1000, in_channels=1)
    assert one.get_submodule(first_conv).in_channels == 1
    # Only the first 7x7 convolution to 64 channels shrinks.
    assert count_parameters(three) - count_parameters(one) == 2 * 64 * 7 * 7


# The models that test_forward_backward_finite does not cover, at 3 channels and, for one model per
# kind of first layer, at 1 channel; ImageNet models at 64x64 (32x32 for the two largest).
OTHER_MODEL_CASES = [
    *((name, 3, 32) for name in CIFAR_OTHERS),
    *((name, 3, 32 if name in ("resnet152", "densenet169") else 64) for name in IMAGENET),
    ("resnet164", 1, 32),
    ("resnet18", 1, 64),
    ("densenet121", 1, 64),
    ("mobilenet_v1", 1, 64),
]


@pytest.mark.parametrize("name,channels,size", OTHER_MODEL_CASES)
def test_forward_backward_finite_other_models(name: str, channels: int, size: int) -> None:
    _assert_forward_backward_finite(name, channels, size)
