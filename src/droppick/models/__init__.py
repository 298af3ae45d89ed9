"""Image classifiers for droppick and a name -> constructor registry.

Families (``model_info(name)["family"]``):

* ``small``: ``small_cnn`` and ``tiny_cnn`` (half its width), CPU-sized CNNs for Fashion-MNIST (``small.py``).
* ``cifar``: the CIFAR architectures of the paper's Tables 5 and 6, i.e. ResNet-20 ... 110,
  ResNet-164 and DenseNet-BC-100 (``cifar.py``).
* ``imagenet``: the ImageNet architectures of Table 7, i.e. torchvision's ResNet-18/50/101/152
  and DenseNet-121/169 plus our own MobileNet-V1 (``imagenet.py``). The torchvision-backed ones
  need the optional ``torchvision`` package, imported only when such a model is built.

Every constructor takes ``(num_classes, in_channels)``; note ``build_model``'s defaults
(10 classes, 1 channel) are Fashion-MNIST's, so ask for ``in_channels=3`` for colour images.

Model construction initialises weights from the global torch RNG, as torch.nn does;
callers that need reproducibility wrap ``build_model`` in ``torch.random.fork_rng``
after seeding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Optional

from torch import nn

__all__ = [
    "MODELS",
    "BasicBlock",
    "CifarResNet",
    "DenseNetBC",
    "MobileNetV1",
    "PreActResNet",
    "SmallCNN",
    "build_model",
    "cifar_resnet",
    "count_parameters",
    "list_models",
    "model_info",
    "register",
]

FAMILIES = {"small": 28, "cifar": 32, "imagenet": 224}  # family -> default input side in pixels

MODELS: dict[str, Callable[..., nn.Module]] = {}


@dataclass(frozen=True)
class _Info:
    name: str
    family: str
    input_size: int
    published_params: Optional[int]  # as reported by the architecture's paper or torchvision; None if none


_INFO: dict[str, _Info] = {}


def register(
    name: str,
    *,
    family: str = "small",
    input_size: Optional[int] = None,
    published_params: Optional[int] = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a ``(num_classes, in_channels) -> nn.Module`` constructor to MODELS.

    The keywords only feed ``model_info``; ``input_size`` defaults to the family's usual image
    side (28, 32 or 224 pixels).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    info = _Info(name, family, FAMILIES[family] if input_size is None else input_size, published_params)

    def add(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model name {name!r} is already registered; pick another name")
        MODELS[name] = factory
        _INFO[name] = info
        return factory

    return add


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


TIMM_PREFIX = "timm:"  # "timm:NAME" builds timm's architecture NAME (pip install 'droppick[timm]')


def check_model_name(name: str) -> None:
    """Refuse a model name that is neither registered nor ``timm:NAME`` (timm's own names are
    checked when the model is built: that needs timm, an optional extra)."""
    if name.startswith(TIMM_PREFIX) and name != TIMM_PREFIX:
        return
    _check_known(name)


def _check_known(name: str) -> None:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}, "
                         f"or {TIMM_PREFIX}NAME for any timm architecture (timm.list_models())")


def build_model(name: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Instantiate the registered model ``name``, or timm's ``NAME`` for ``"timm:NAME"``."""
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
    if name.startswith(TIMM_PREFIX):
        return _timm_model(name[len(TIMM_PREFIX):], num_classes, in_channels)
    _check_known(name)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


def _timm_model(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    """timm's ``arch`` with random weights (``pretrained=False``: nothing is downloaded, and a
    pre-trained start would not be the training DaP is about)."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"--model {TIMM_PREFIX}{arch} needs timm: pip install 'droppick[timm]'") from err
    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(f"timm has no architecture {arch!r}" + (f"; similar names: {', '.join(close)}" if close else "")
                         + "; timm.list_models() lists them all")
    return timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def model_info(name: str) -> dict[str, Any]:
    """``name``, ``family`` ("small", "cifar" or "imagenet"), ``input_size`` (default image side in
    pixels) and ``published_params`` (the reference parameter count, 10 classes for the CIFAR
    family and 1000 for ImageNet, 3 input channels; None where nothing was published)."""
    _check_known(name)
    return asdict(_INFO[name])


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


# The submodules register their models with the functions above, so they are imported last.
from .small import SmallCNN  # noqa: E402
from .cifar import BasicBlock, CifarResNet, DenseNetBC, PreActResNet, cifar_resnet  # noqa: E402
from .imagenet import MobileNetV1  # noqa: E402
