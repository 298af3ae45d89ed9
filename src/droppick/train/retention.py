"""The trainer's per-sample retention record, for ``droppick inspect``.

How many epochs each sample was trained on, the epoch after which it was first dropped, and
the losses that rank samples tied on those counts: the loss of the last epoch each sample
trained in, and its loss in the epoch it was first dropped after. Saved in every checkpoint
beside the DaP state, so a resumed run keeps it exactly.
"""

from __future__ import annotations

import torch


class Retention:
    """Per-sample record for inspection (all tensors have one entry per training sample)."""

    def __init__(self, num_samples: int):
        self.epochs_trained = torch.zeros(num_samples, dtype=torch.int32)
        self.first_dropped = torch.zeros(num_samples, dtype=torch.int32)  # 0 = never dropped
        self.last_loss = torch.full((num_samples,), float("nan"))  # NaN = never recorded
        self.drop_loss = torch.full((num_samples,), float("nan"))  # loss in the epoch of first_dropped

    def update(self, trained: torch.Tensor, next_subset: torch.Tensor, epoch: int, losses: torch.Tensor) -> None:
        """After ``epoch``: ``trained`` was its subset, ``next_subset`` the next one, ``losses`` the
        epoch's loss per sample (all ranks merged; +inf where none was recorded)."""
        self.epochs_trained[trained] += 1
        recorded = torch.isfinite(losses)
        self.last_loss[recorded] = losses[recorded]
        dropped = torch.zeros_like(self.first_dropped, dtype=torch.bool)
        dropped[trained] = True
        dropped[next_subset] = False
        first = dropped & (self.first_dropped == 0)
        self.first_dropped[first] = epoch
        self.drop_loss[first] = self.last_loss[first]

    def state_dict(self) -> dict:
        return {"epochs_trained": self.epochs_trained.clone(), "first_dropped": self.first_dropped.clone(),
                "last_loss": self.last_loss.clone(), "drop_loss": self.drop_loss.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.epochs_trained = state["epochs_trained"].clone()
        self.first_dropped = state["first_dropped"].clone()
        self.last_loss = state["last_loss"].clone()
        self.drop_loss = state["drop_loss"].clone()
