"""InfoBatch (Qin et al., ICLR 2024), as a matched-compute peer of DaP."""

from __future__ import annotations

from typing import Optional

import torch

from ..seeding import generator
from ..selection import select_infobatch
from .base import PICK, PRUNE, Change, EpochEnd, Policy


class InfoBatch(Policy):
    """Every epoch, prune a random ``ratio`` of the samples whose last loss is below the mean, and
    weight the kept ones of them by 1/(1 - ratio); all data once past ``delta * E`` ("annealing").

    Its subset sizes depend on the losses, so ``plan()`` is the all-data upper bound.
    State: ``scored`` (samples with a finite loss in any epoch), ``last_losses`` (each one's
    latest) and ``weights`` (this epoch's, or None).
    """

    name = "infobatch"

    def __init__(self, ratio: float = 0.5, delta: float = 0.875):
        if not 0.0 <= ratio < 1.0 or not 0.0 < delta <= 1.0:
            raise ValueError(f"infobatch_ratio must lie in [0, 1) and infobatch_delta in (0, 1]; got {ratio} and {delta}")
        self.ratio, self.delta = float(ratio), float(delta)
        self.last_losses: Optional[torch.Tensor] = None
        self.weights: Optional[torch.Tensor] = None

    def end_epoch(self, end: EpochEnd) -> Optional[Change]:
        # InfoBatch scores a sample by its latest loss, not only this epoch's (pruned ones have none).
        recorded = torch.isfinite(end.losses)
        if self.last_losses is None:
            self.last_losses = torch.full_like(end.losses, float("nan"))
        self.last_losses[recorded] = end.losses[recorded]
        if end.epoch + 1 > round(self.delta * end.schedule.epochs):
            self.weights = None
            return Change(torch.ones(end.num_samples, dtype=torch.bool), PICK)
        subset, self.weights = select_infobatch(self.last_losses, generator(end.seed, end.epoch, "infobatch"), self.ratio)
        return Change(subset, PRUNE)

    def batch_weights(self, indices: torch.Tensor) -> Optional[torch.Tensor]:
        return None if self.weights is None else self.weights[torch.as_tensor(indices).cpu()]

    def params(self) -> dict:
        return {"infobatch_ratio": self.ratio, "infobatch_delta": self.delta}

    def state_dict(self) -> dict:
        return {"last_losses": None if self.last_losses is None else self.last_losses.clone(),
                "weights": None if self.weights is None else self.weights.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.last_losses = None if state["last_losses"] is None else state["last_losses"].clone()
        self.weights = None if state["weights"] is None else state["weights"].clone()
