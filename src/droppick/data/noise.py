"""``--label-noise R``: wrong labels injected into the training split, for experiments on noisy data.

A seeded share R of the training samples gets another label: ``symmetric`` draws it uniformly
from the other classes; ``pairs`` gives every class one fixed confusable partner and flips to it.
The test split is never touched. Noise comes before ``--val-samples`` carves the validation split,
so that split is noisy too: at tuning time nobody has clean labels.

Exactly round(R x N) samples change label (a fixed count, not a coin per sample), so two runs at the
same R differ in which samples, never in how many.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .in_memory import InMemoryImages
from .pipeline import InMemorySplit

NOISE_KINDS = ("symmetric", "pairs")
# Fashion-MNIST's classes in partner pairs, each the other's most confusable class in the first four
# pairs (T-shirt/Shirt, Pullover/Coat, Sandal/Sneaker, Trouser/Dress); Bag/Ankle boot is what is left.
FASHION_MNIST_PAIRS = (6, 3, 4, 1, 2, 7, 0, 5, 9, 8)


def pair_of(num_classes: int, dataset: Optional[str] = None) -> tuple[int, ...]:
    """Each class's partner for ``pairs`` noise: Fashion-MNIST's confusable pairs, else class c flips to
    c + 1 (mod K), the usual pair flip of the noisy-label literature."""
    if dataset == "fashion-mnist":
        return FASHION_MNIST_PAIRS
    return tuple((c + 1) % num_classes for c in range(num_classes))


def flip_labels(labels: torch.Tensor, rate: float, kind: str, num_classes: int, seed: int,
                pairs: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy labels, sorted indices of the flipped samples): round(rate x N) samples drawn from
    ``seed`` get another class (module docstring). ``pairs[c]``: c's partner (default ``pair_of``)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise_kind must be one of {', '.join(NOISE_KINDS)}; got {kind!r}")
    if not 0.0 <= rate < 1.0:  # NaN fails too
        raise ValueError(f"label_noise must lie in [0, 1) (the share of training labels made wrong), got {rate}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    labels = labels.cpu().long()
    gen = torch.Generator().manual_seed(seed)
    flipped = torch.randperm(len(labels), generator=gen)[:round(rate * len(labels))].sort().values
    noisy = labels.clone()
    if kind == "symmetric":  # one of the other K - 1 classes: skip over the true one
        offset = torch.randint(1, num_classes, (flipped.numel(),), generator=gen)
        noisy[flipped] = (labels[flipped] + offset) % num_classes
    else:
        partner = torch.as_tensor(pair_of(num_classes) if pairs is None else pairs, dtype=torch.int64)
        if partner.numel() != num_classes or bool((partner == torch.arange(num_classes)).any()):
            raise ValueError(f"pairs must name another class for each of the {num_classes} classes, got {partner.tolist()}")
        noisy[flipped] = partner[labels[flipped]]
    return noisy, flipped


def with_label_noise(split: InMemorySplit, rate: float, kind: str, seed: int,
                     dataset: Optional[str] = None) -> InMemorySplit:
    """The split with noisy labels, its clean ones kept beside them (``InMemorySplit.flipped``).
    In-memory splits only: a streamed one reads its labels from files, which droppick does not rewrite."""
    if not isinstance(split, InMemorySplit):
        raise ValueError("label_noise (--label-noise) changes the labels of an in-memory training split "
                         "(fashion-mnist, cifar10, cifar100); for imagefolder or hf:PATH, write the noisy labels into "
                         "the data instead")
    noisy, _ = flip_labels(split.labels, rate, kind, split.num_classes, seed, pair_of(split.num_classes, dataset))
    images = split.images
    relabelled = InMemoryImages(images.images, noisy.to(images.labels.device), mean=images.mean, std=images.std)
    return InMemorySplit(relabelled, split.augment, num_classes=split.num_classes, padding=split.padding,
                         flip=split.flip, clean_labels=split.labels)
