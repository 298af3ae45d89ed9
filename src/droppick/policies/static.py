"""Table 2f's "63% data": one fixed random subset, trained on every epoch."""

from __future__ import annotations

from typing import Optional

import torch

from ..plan import Plan
from ..schedule import DaPSchedule
from ..seeding import generator
from ..selection import stratified_choice
from .base import Policy
from .full import check_target, matched_size


class Static(Policy):
    """Every epoch trains on the same ``round(target_compute * N)`` samples, drawn once.

    - target_compute: default, the schedule's planned DaP compute.
    - labels: when given, the subset keeps every class's share (``selection.stratified_choice``).
    """

    name = "static"

    def __init__(self, target_compute: Optional[float] = None, labels: Optional[torch.Tensor] = None):
        self.target_compute = check_target(target_compute)
        self.labels = labels

    def size(self, schedule: DaPSchedule, num_samples: int) -> int:
        return matched_size(self.target_compute, schedule, num_samples)

    def plan(self, schedule: DaPSchedule, num_samples: int) -> Plan:
        return Plan(num_samples, (self.size(schedule, num_samples),) * schedule.epochs, (None,) * schedule.epochs)

    def first_subset(self, schedule: DaPSchedule, num_samples: int, seed: int) -> torch.Tensor:
        k, g = self.size(schedule, num_samples), generator(seed, "static")
        if self.labels is None:
            return torch.randperm(num_samples, generator=g)[:k].sort().values
        if self.labels.numel() != num_samples:
            raise ValueError(f"labels has {self.labels.numel()} entries for {num_samples} samples")
        return stratified_choice(self.labels, k, g)

    def params(self) -> dict:
        return {"target_compute": self.target_compute}
