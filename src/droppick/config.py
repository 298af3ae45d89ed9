"""Every setting of a ``droppick train`` run, in one typed place.

A ``TrainConfig`` is what the run directory's ``config.json`` holds, so a resumed run gets
exactly the settings it started with.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .engine import POLICIES
from .schedule import DaPSchedule

DATASETS = ("fashion-mnist",)


@dataclass
class TrainConfig:
    # data
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None  # None: the standard locations (see data.find_fashion_mnist)
    train_samples: Optional[int] = None  # seeded class-stratified slice of the train split; None = all
    test_samples: Optional[int] = None  # same for the test split
    # model and optimiser (SGD with momentum, as in the paper's CIFAR recipes)
    model: str = "small_cnn"
    batch_size: int = 128  # samples per step
    lr: float = 0.05  # initial learning rate
    momentum: float = 0.9
    weight_decay: float = 5e-4  # L2 coefficient
    lr_milestones: Optional[list[int]] = None  # LR /10 after these epochs; None = reuse_at (Section 3.3)
    augment_padding: int = 4  # pixels of zero padding for the random crop
    augment_flip: bool = True  # random horizontal flip
    # Drop-and-Pick (the paper's Table 1)
    policy: str = "dap"
    epochs: int = 30  # E
    warmup: int = 4  # W, epochs
    interval: int = 1  # I, epochs
    keep: float = 0.9  # p, fraction of the current subset
    active: Optional[int] = None  # alpha, epochs; None = no limit
    reuse_at: list[int] = field(default_factory=lambda: [15, 25])  # R, epochs
    # run
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    eval_batch_size: int = 1000  # samples per evaluation step

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {self.policy!r}")
        for name in ("batch_size", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        for name in ("train_samples", "test_samples"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be > 0")
        if self.augment_padding < 0:
            raise ValueError(f"augment_padding must be >= 0, got {self.augment_padding}")
        milestones = self.milestones
        if list(milestones) != sorted(set(milestones)) or any(not 1 <= m <= self.epochs for m in milestones):
            raise ValueError(f"lr_milestones must be increasing epochs in 1..{self.epochs}, got {milestones}")
        self.schedule  # validates the DaP hyper-parameters with their own messages

    @property
    def schedule(self) -> DaPSchedule:
        return DaPSchedule(self.epochs, self.warmup, self.interval, self.keep, self.active, self.reuse_at)

    @property
    def milestones(self) -> list[int]:
        return list(self.reuse_at if self.lr_milestones is None else self.lr_milestones)

    def lr_at(self, epoch: int) -> float:
        """Step schedule: divided by 10 after each milestone, so epoch m + 1 is the first decayed."""
        return self.lr * 0.1 ** sum(m < epoch for m in self.milestones)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
