"""``--val-samples``: a seeded, class-stratified validation split held out of the training data,
so that hyper-parameters can be chosen without looking at the test set."""

from __future__ import annotations

from typing import Optional

import torch

from ..seeding import derive_seed
from .in_memory import stratified_slice
from .pipeline import InMemorySplit


def validation_indices(labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept for training, held out) sorted indices into a training split of ``labels``: ``n``
    held out with every class's share (``stratified_slice``), drawn from ``seed``."""
    total = len(labels)
    if not 1 <= n < total:
        raise ValueError(f"val_samples must lie in 1..{total - 1}: the training split has {total} samples "
                         f"and some must be left to train on; got {n}")
    held = stratified_slice(labels.cpu(), n, derive_seed(seed, "val-split"))
    kept = torch.ones(total, dtype=torch.bool)
    kept[held] = False
    return kept.nonzero().squeeze(1), held


def hold_out(train_split, n: Optional[int], seed: int):
    """(train, validation) splits: ``train_split`` less ``n`` held-out samples, and those samples,
    evaluated like the test split (no augmentation); (train_split, None) when ``n`` is None.

    The held-out images are carved after ``--per-class``/``--train-samples`` (and ``--label-noise``:
    stratified by the labels as given, noisy ones included) and keep the training
    split's normalisation statistics (per-channel mean and std, computed before the carve: the
    held-out images' share of two numbers per channel, not their labels). In-memory datasets only.
    """
    if n is None:
        return train_split, None
    if not isinstance(train_split, InMemorySplit):
        raise ValueError("val_samples (--val-samples) holds out part of an in-memory training split (fashion-mnist, "
                         "cifar10, cifar100); with --dataset imagefolder keep a validation folder of your own")
    kept, held = validation_indices(train_split.labels, n, seed)
    images, clean = train_split.images, train_split.clean_labels
    return (InMemorySplit(images.subset(kept), True, num_classes=train_split.num_classes, padding=train_split.padding,
                          flip=train_split.flip, clean_labels=None if clean is None else clean[kept]),
            InMemorySplit(images.subset(held), False, num_classes=train_split.num_classes,
                          clean_labels=None if clean is None else clean[held]))
