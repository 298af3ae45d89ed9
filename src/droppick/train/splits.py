"""A run's data as its ``TrainConfig`` describes it: the bridge from the trainer's settings to
``data.pipeline``, which takes plain arguments and knows nothing of the trainer."""

from __future__ import annotations

from typing import Optional

import torch

from ..data.noise import with_label_noise
from ..data.pipeline import load_splits, slice_split
from ..data.validation import hold_out
from ..seeding import derive_seed
from .config import TrainConfig


def select_samples(cfg: TrainConfig, labels: torch.Tensor, split: str) -> Optional[torch.Tensor]:
    """Indices of a split the run keeps: --per-class first (train only), then --train/test-samples,
    then --imbalance (train only: the test split stays as it is, balanced where the dataset's is)."""
    if split == "train":
        return slice_split(labels, split, cfg.seed, per_class=cfg.per_class, samples=cfg.train_samples,
                           imbalance=cfg.imbalance)
    return slice_split(labels, split, cfg.seed, samples=cfg.test_samples)


def build_splits(cfg: TrainConfig, pin_memory: bool = False, device: torch.device | str = "cpu") -> tuple:
    """(train, test) splits for ``cfg.dataset``; in-memory data lives on ``device``."""
    return load_splits(cfg.dataset, cfg.data_dir, lambda labels, split: select_samples(cfg, labels, split),
                       device=device, padding=cfg.augment_padding, flip=cfg.augment_flip, image_size=cfg.image_size,
                       eval_resize=cfg.eval_resize, decode=cfg.decode, skip_unreadable=cfg.skip_unreadable,
                       num_workers=cfg.num_workers, pin_memory=pin_memory, image_column=cfg.image_column,
                       label_column=cfg.label_column, chunk_window=cfg.chunk_window)


def build_run_splits(cfg: TrainConfig, pin_memory: bool = False, device: torch.device | str = "cpu") -> tuple:
    """(train, val, test) of a run: ``build_splits``, ``--label-noise`` in train, then ``--val-samples``
    held out of it (val is None without it)."""
    train, test = build_splits(cfg, pin_memory=pin_memory, device=device)
    if cfg.label_noise:  # before the hold-out: the validation split is as noisy as the rest
        train = with_label_noise(train, cfg.label_noise, cfg.noise_kind, derive_seed(cfg.seed, "label-noise"), cfg.dataset)
    train, val = hold_out(train, cfg.val_samples, cfg.seed, cfg.cv_folds, cfg.cv_fold)
    return train, val, test


def checked_num_classes(cfg: TrainConfig, train_split, test_split) -> int:
    """The model's output count: the split's number of classes (imagefolder: its class folders).
    A label outside it would index past the model's outputs, so it is refused here, by name."""
    labels = torch.cat([train_split.labels, test_split.labels])
    num_classes = train_split.num_classes
    bad = labels[(labels < 0) | (labels >= num_classes)].unique()
    if bad.numel():
        raise ValueError(f"{cfg.dataset} has {num_classes} classes, so labels must lie in 0..{num_classes - 1}, "
                         f"but the data in {cfg.data_dir or 'the default location'} has labels {bad[:10].tolist()}; "
                         "fix its label files or choose the --dataset they belong to")
    return num_classes
