"""Per-image augmentation pipelines (torchvision.transforms.v2) for data that does not fit in memory.

Paper Section 4.3 (ImageNet): random-resized crops covering 8%..100% of the image with
aspect ratio 3/4..4/3, random horizontal flip, resize to 224, per-channel normalisation;
single 224 centre crop for evaluation. Sizes are parameters so tests can use tiny images.

torchvision draws these crops from the *global* torch RNG. In a DataLoader each worker
reseeds it from the loader's base seed, so pass ``generator=torch.Generator().manual_seed(s)``
to the DataLoader to make augmentation reproducible without seeding anything globally.

In-memory CIFAR does not need these: ``droppick.data.in_memory.InMemoryImages.batch`` augments whole
batches at once. ``cifar_pil_train_transform`` is its per-image twin; tests check the two
draw the same crop and flip distribution and produce identical pixels for the same draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from .datasets import CIFAR_MEAN, CIFAR_STD

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _normalised_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    # Geometry runs on the PIL image before this, so it moves uint8 pixels, not float32 ones.
    return [v2.ToImage(), *normalise_batch(mean, std).transforms]


def imagenet_train_geometry(size: int = 224) -> v2.Compose:
    """Random-resized crop (scale 0.08..1, ratio 3/4..4/3) to ``size`` and a random flip: the
    per-image part of the training pipeline, on a PIL image or a uint8 tensor on any device."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
                       v2.RandomHorizontalFlip()])


def imagenet_eval_geometry(resize: int = 256, crop: int = 224) -> v2.Compose:
    """Resize the shorter side to ``resize``, then the centre ``crop`` x ``crop``."""
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize}); the centre crop would need padding")
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])


def normalise_batch(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> v2.Compose:
    """uint8 images (one or a stacked batch) to normalised float32, on whatever device they are."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


def imagenet_train_transform(
    size: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """``imagenet_train_geometry``, then float tensor and normalise."""
    return v2.Compose([*imagenet_train_geometry(size).transforms, *_normalised_tensor(mean, std)])


def imagenet_eval_transform(
    resize: int = 256, crop: int = 224, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """``imagenet_eval_geometry``, then float tensor and normalise."""
    return v2.Compose([*imagenet_eval_geometry(resize, crop).transforms, *_normalised_tensor(mean, std)])


def cifar_pil_train_transform(
    padding: int = 4,
    mean: Sequence[float] = CIFAR_MEAN["cifar10"],
    std: Sequence[float] = CIFAR_STD["cifar10"],
    size: int = 32,
) -> v2.Compose:
    """Zero-pad by ``padding``, random ``size`` crop, flip, float tensor, normalise: the per-image
    equivalent of ``InMemoryImages.batch(..., padding=padding)`` given the same ``mean``/``std``."""
    return v2.Compose(
        [
            v2.RandomCrop(size, padding=padding, fill=0, padding_mode="constant"),
            v2.RandomHorizontalFlip(),
            *_normalised_tensor(mean, std),
        ]
    )
