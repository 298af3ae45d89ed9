"""Table 2f's "Random" row: the same schedule, a uniform choice at each drop."""

from __future__ import annotations

import torch


class KeepRandom:
    """Keep ``k`` members chosen uniformly without replacement (losses unused)."""

    name = "random"

    def select(self, subset: torch.Tensor, losses: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        chosen = torch.randperm(subset.numel(), generator=generator)[:k]
        return subset[chosen.sort().values]
