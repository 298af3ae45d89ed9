"""Tests for droppick.models: registry, CIFAR ResNet shapes/sizes, gradients."""

from __future__ import annotations

import pytest
import torch

from droppick.models import MODELS, build_model, cifar_resnet, count_parameters, list_models

RESNETS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
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
    assert list_models() == sorted(["small_cnn", *RESNETS])
    assert set(MODELS) == set(list_models())


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ValueError, match=r"resnet9.*available models: resnet110, resnet20.*small_cnn"):
        build_model("resnet9")


@pytest.mark.parametrize("depth", [7, 9, 2, 21, 0])
def test_bad_depth(depth: int) -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(depth)


def test_parameter_counts() -> None:
    # Option A shortcuts are parameter-free, so resnet20 has 269,722 parameters, not the
    # often-quoted 272,474 (which includes 1x1 projection shortcuts at the two stage changes).
    exact = {"resnet20": 269_722, "resnet110": 1_727_962}
    for name, depth in RESNETS.items():
        count = count_parameters(build_model(name, num_classes=10, in_channels=3))
        assert count == _option_a_count(depth, 3, 10)
        assert round(count / 1e6, 2 if count < 1e6 else 1) == PAPER_MILLIONS[name]
        if name in exact:
            assert count == exact[name]
    assert count_parameters(build_model("resnet20", num_classes=7, in_channels=1)) == _option_a_count(20, 1, 7)


@pytest.mark.parametrize("name", sorted(["small_cnn", *RESNETS]))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_forward_backward_finite(name: str, channels: int, size: int) -> None:
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


def test_small_cnn_small_inputs() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("small_cnn", num_classes=4, in_channels=2).eval()
        assert model(torch.randn(1, 2, 8, 8)).shape == (1, 4)
