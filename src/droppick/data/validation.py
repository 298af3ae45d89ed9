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


def fold_indices(labels: torch.Tensor, fold: int, folds: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) sorted indices: fold ``fold`` of a seeded, class-stratified ``folds``-fold
    partition of a training split of ``labels`` (each class's members shuffled and dealt out in
    turn), so that the folds together hold every sample out exactly once (out-of-sample predictions)."""
    if not 2 <= folds <= len(labels) or not 0 <= fold < folds:
        raise ValueError(f"cv_fold must lie in 0..cv_folds-1 and cv_folds in 2..{len(labels)}; got fold {fold} of {folds}")
    gen = torch.Generator().manual_seed(derive_seed(seed, "cv-folds"))
    order = torch.randperm(len(labels), generator=gen)
    grouped = order[labels.cpu()[order].sort(stable=True).indices]  # shuffled within each class, classes in turn
    held = grouped[torch.arange(len(labels)) % folds == fold].sort().values
    kept = torch.ones(len(labels), dtype=torch.bool)
    kept[held] = False
    return kept.nonzero().squeeze(1), held


def hold_out(train_split, n: Optional[int], seed: int, folds: Optional[int] = None, fold: int = 0):
    """(train, validation) splits: ``train_split`` less ``n`` held-out samples (or, with ``folds``, fold
    ``fold`` of ``fold_indices``), and those samples, evaluated like the test split (no augmentation);
    (train_split, None) when neither is set.

    The held-out images are carved after ``--per-class``/``--train-samples`` (and ``--label-noise``:
    stratified by the labels as given, noisy ones included) and keep the training
    split's normalisation statistics (per-channel mean and std, computed before the carve: the
    held-out images' share of two numbers per channel, not their labels). In-memory datasets only.
    """
    if n is None and folds is None:
        return train_split, None
    if not isinstance(train_split, InMemorySplit):
        raise ValueError("val_samples (--val-samples) holds out part of an in-memory training split (fashion-mnist, "
                         "cifar10, cifar100); with --dataset imagefolder keep a validation folder of your own")
    if folds is not None:  # --cv-folds K --cv-fold k: the k-th fold of a K-fold partition instead
        kept, held = fold_indices(train_split.labels, fold, folds, seed)
    else:
        kept, held = validation_indices(train_split.labels, n, seed)
    images, clean = train_split.images, train_split.clean_labels
    return (InMemorySplit(images.subset(kept), True, num_classes=train_split.num_classes, padding=train_split.padding,
                          flip=train_split.flip, clean_labels=None if clean is None else clean[kept]),
            InMemorySplit(images.subset(held), False, num_classes=train_split.num_classes,
                          clean_labels=None if clean is None else clean[held]))
