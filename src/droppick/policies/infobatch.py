"""InfoBatch (Qin et al., ICLR 2024), as a matched-compute peer of DaP."""

from __future__ import annotations

from typing import Optional

import torch

from ..seeding import generator
from ..selection import ratio_for_budget, select_infobatch, well_learned
from .base import PICK, PRUNE, Change, EpochEnd, Policy
from .full import check_target

MAX_RATIO = 0.95  # a calibrated ratio never prunes more than this share of the well-learned samples


class InfoBatch(Policy):
    """Every epoch, prune a random ``ratio`` of the samples whose last loss is below the mean, and
    weight the kept ones of them by 1/(1 - ratio); all data once past ``delta * E`` ("annealing").

    With ``target_compute`` the ratio is calibrated instead of fixed: after each epoch it is set
    from the losses observed (how many samples are below the mean now) and the samples trained so
    far, so that the run's compute lands on the target. (InfoBatch's paper fixes r = 0.5; its
    compute then depends on the loss distribution, which made a fixed-r "matched" baseline miss
    DaP's compute by over a point.) The target is reachable when pruning at most ``MAX_RATIO``
    of the well-learned samples suffices; otherwise the run uses more and its record says so.

    Its subset sizes depend on the losses, so ``plan()`` is the all-data upper bound.
    State: ``last_losses`` (each sample's latest loss, NaN before its first), ``weights`` (this
    epoch's, or None), ``samples_seen`` (samples trained so far) and ``ratios`` (the ratio used
    after each epoch that pruned).
    """

    name = "infobatch"

    def __init__(self, ratio: float = 0.5, delta: float = 0.875, target_compute: Optional[float] = None):
        if not 0.0 <= ratio < 1.0 or not 0.0 < delta <= 1.0:
            raise ValueError(f"infobatch_ratio must lie in [0, 1) and infobatch_delta in (0, 1]; got {ratio} and {delta}")
        self.ratio, self.delta, self.target = float(ratio), float(delta), check_target(target_compute)
        self.last_losses: Optional[torch.Tensor] = None
        self.weights: Optional[torch.Tensor] = None
        self.samples_seen = 0
        self.ratios: list[float] = []

    def end_epoch(self, end: EpochEnd) -> Optional[Change]:
        self.samples_seen += end.recorded
        # InfoBatch scores a sample by its latest loss, not only this epoch's (pruned ones have none).
        recorded = torch.isfinite(end.losses)
        if self.last_losses is None:
            self.last_losses = torch.full_like(end.losses, float("nan"))
        self.last_losses[recorded] = end.losses[recorded]
        last_pruned = round(self.delta * end.schedule.epochs)  # the last epoch that may train a pruned subset
        if end.epoch + 1 > last_pruned:
            self.weights = None
            return Change(torch.ones(end.num_samples, dtype=torch.bool), PICK)
        ratio = self.ratio
        if self.target is not None:
            budget_left = self.target * end.schedule.epochs * end.num_samples - self.samples_seen
            ratio = ratio_for_budget(budget_left, last_pruned - end.epoch, end.schedule.epochs - last_pruned,
                                     end.num_samples, int(well_learned(self.last_losses).sum()), MAX_RATIO)
        self.ratios.append(ratio)
        subset, self.weights = select_infobatch(self.last_losses, generator(end.seed, end.epoch, "infobatch"), ratio)
        return Change(subset, PRUNE)

    def batch_weights(self, indices: torch.Tensor) -> Optional[torch.Tensor]:
        return None if self.weights is None else self.weights[torch.as_tensor(indices).cpu()]

    def params(self) -> dict:
        return {"infobatch_ratio": self.ratio, "infobatch_delta": self.delta, "target_compute": self.target}

    def state_dict(self) -> dict:
        return {"last_losses": None if self.last_losses is None else self.last_losses.clone(),
                "weights": None if self.weights is None else self.weights.clone(),
                "samples_seen": self.samples_seen, "ratios": list(self.ratios)}

    def load_state_dict(self, state: dict) -> None:
        self.last_losses = None if state["last_losses"] is None else state["last_losses"].clone()
        self.weights = None if state["weights"] is None else state["weights"].clone()
        self.samples_seen, self.ratios = int(state["samples_seen"]), list(state["ratios"])
