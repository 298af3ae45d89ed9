"""The sampler: the current DaP subset, in a fresh order every epoch, sharded by rank."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import torch
from torch.utils.data import Sampler

from . import distributed
from .seeding import generator


def per_rank(n: int, world_size: int) -> int:
    """Samples each rank trains on when ``n`` are sharded over ``world_size`` ranks (padded)."""
    return math.ceil(n / world_size)


def shard_order(subset: torch.Tensor, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's sample indices for ``epoch``: a seeded permutation of ``subset``, sharded.

    All ranks draw the same permutation (same seed and epoch), pad it by wrapping around to a
    multiple of ``world_size`` so every rank runs the same number of steps, and take every
    ``world_size``-th element from ``rank``. Shards are disjoint up to those padding repeats,
    and their union is the subset.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
    n = subset.numel()
    order = subset[torch.randperm(n, generator=generator(seed, epoch, "order"))]
    padding = per_rank(n, world_size) * world_size - n
    if padding:
        order = torch.cat([order, order.repeat(math.ceil(padding / n))[:padding]])
    return order[rank::world_size]


class DaPSampler(Sampler[int]):
    """A live view of a ``DropAndPick``: each ``iter()`` yields that epoch's subset.

    Its length is known before the epoch starts (``ceil(len(subset) / world_size)``), so
    progress bars and step-based schedules work with a shrinking epoch.
    """

    def __init__(self, dap, rank: Optional[int] = None, world_size: Optional[int] = None):
        default_rank, default_world = distributed.rank_and_world()
        self.dap = dap
        self.rank = default_rank if rank is None else rank
        self.world_size = default_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in 0..{self.world_size - 1}, got {self.rank}")

    def __len__(self) -> int:
        return per_rank(self.dap.subset.numel(), self.world_size)

    def indices(self) -> torch.Tensor:
        """This epoch's sample indices for this rank, as one LongTensor (what ``iter`` yields)."""
        return shard_order(self.dap.subset, self.dap.seed, self.dap.epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())
