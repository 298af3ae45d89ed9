"""Keep the hardest by an exponential moving average of each sample's losses across epochs."""

from __future__ import annotations

from typing import Optional

import torch

from ..selection import select_hardest, update_average

BETA = 0.8  # droppick's default: the last epoch weighs 0.2, one five epochs back 0.2 * 0.8^5 = 0.07


class KeepHardestAverage:
    """At each drop keep the ``k`` members with the highest moving average of their losses.

    After every epoch (``observe``) each sample trained in it updates ``average = beta * average +
    (1 - beta) * loss``; its first loss sets the average. A sample not trained in an epoch (dropped
    or unrecorded) keeps its average unchanged, so a sample picked back up is judged by what it
    showed before its drop until new losses move it. At a drop a member never observed ranks
    hardest (its average is +inf, as ``KeepHardest`` ranks an unrecorded loss) and a member whose
    loss was non-finite ranks last (-inf; it leaves the subset anyway); ties go to the lower
    index (``selection.update_average`` and ``select_hardest``). beta = 0 is ``"dap"``. The name
    ``"ema"`` uses ``BETA``.

    State: ``average``, float32[N] (4 bytes per sample; +inf where never observed).
    """

    name = "ema"

    def __init__(self, beta: float = BETA):
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
            raise ValueError(f"ema beta must be a number in [0, 1) (the weight of a sample's past average), "
                             f"got {beta!r}")
        self.beta = float(beta)
        self.average: Optional[torch.Tensor] = None

    def observe(self, losses: torch.Tensor) -> None:
        if self.average is None:
            self.average = torch.full((losses.numel(),), float("inf"))
        update_average(self.average, losses, self.beta)

    def select(self, subset: torch.Tensor, losses: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        return select_hardest(subset, self.average, k)

    def params(self) -> dict:
        return {"ema_beta": self.beta}

    def state_dict(self) -> dict:
        return {"average": None if self.average is None else self.average.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.average = None if state["average"] is None else state["average"].to(torch.float32).clone()
