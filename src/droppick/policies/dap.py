"""The paper's rule (Section 4.1): keep the samples with the highest loss."""

from __future__ import annotations

import torch

from ..selection import select_hardest


class KeepHardest:
    """Keep the ``k`` members with the highest loss this epoch; among equal losses the lower
    sample index. A member with no loss this epoch (+inf) is kept first: nothing says it is easy."""

    name = "dap"

    def select(self, subset: torch.Tensor, losses: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        return select_hardest(subset, losses, k)
