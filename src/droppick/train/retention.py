"""The trainer's per-sample retention record, for ``droppick inspect``.

How many epochs each sample was trained on, and the epoch after which it was first dropped;
saved in every checkpoint beside the DaP state, so a resumed run keeps it exactly.
"""

from __future__ import annotations

import torch


class Retention:
    """Per-sample counters for inspection: epochs trained on, and the first epoch dropped after."""

    def __init__(self, num_samples: int):
        self.epochs_trained = torch.zeros(num_samples, dtype=torch.int32)
        self.first_dropped = torch.zeros(num_samples, dtype=torch.int32)  # 0 = never dropped

    def update(self, trained: torch.Tensor, next_subset: torch.Tensor, epoch: int) -> None:
        self.epochs_trained[trained] += 1
        dropped = torch.zeros_like(self.first_dropped, dtype=torch.bool)
        dropped[trained] = True
        dropped[next_subset] = False
        self.first_dropped[dropped & (self.first_dropped == 0)] = epoch

    def state_dict(self) -> dict:
        return {"epochs_trained": self.epochs_trained.clone(), "first_dropped": self.first_dropped.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_trained = state["epochs_trained"].clone()
        self.first_dropped = state["first_dropped"].clone()
