"""The sampler: the current DaP subset, in a fresh order every epoch, sharded by rank.

Data stored in chunks (litdata's chunk files, WebDataset's tar shards) costs a chunk fetch whenever
the reader moves to another chunk, so a uniform order over the subset would fetch a chunk for
almost every sample. Given ``Chunks`` the order is chunk-aware instead: the chunks that hold a
sample of the subset come in a seeded order, the subset's samples are shuffled within windows of
``window`` consecutive chunks of it, and each rank takes a contiguous block, so that one pass
fetches each chunk once and each rank about 1/world of them.
"""

from __future__ import annotations

import math
from typing import Iterator, NamedTuple, Optional

import torch
from torch.utils.data import Sampler

from . import distributed
from .seeding import generator


def per_rank(n: int, world_size: int) -> int:
    """Samples each rank trains on when ``n`` are sharded over ``world_size`` ranks (padded)."""
    return math.ceil(n / world_size)


class Chunks(NamedTuple):
    """How the samples are stored: ``chunk_of[i]`` is sample i's chunk; ``window`` chunks are shuffled together."""

    chunk_of: torch.Tensor
    window: int


def chunk_aware_order(subset: torch.Tensor, chunks: Chunks, seed: int, epoch: int) -> torch.Tensor:
    """``subset`` in the chunk-aware order of ``epoch`` (see the module's docstring)."""
    chunk_of, window = chunks
    if window < 1:
        raise ValueError(f"chunk_window must be >= 1 (chunks whose samples are shuffled together), got {window}")
    if subset.numel() and int(subset.max()) >= chunk_of.numel():
        raise ValueError(f"chunks.chunk_of covers {chunk_of.numel()} samples, but the subset holds sample {int(subset.max())}")
    gen = generator(seed, epoch, "chunk-order")
    of_sample = chunk_of[subset]
    present = of_sample.unique()
    position = torch.zeros(int(present.max()) + 1 if present.numel() else 0, dtype=torch.int64)
    position[present[torch.randperm(present.numel(), generator=gen)]] = torch.arange(present.numel())
    shuffled = torch.randperm(subset.numel(), generator=gen)
    by_window = (position[of_sample[shuffled]] // window).sort(stable=True).indices  # stable: shuffled within
    return subset[shuffled[by_window]]


def shard_order(subset: torch.Tensor, seed: int, epoch: int, rank: int, world_size: int,
                chunks: Optional[Chunks] = None) -> torch.Tensor:
    """This rank's sample indices for ``epoch``: a seeded permutation of ``subset``, sharded.

    All ranks draw the same permutation (same seed and epoch), pad it by wrapping around to a
    multiple of ``world_size`` so every rank runs the same number of steps, and take every
    ``world_size``-th element from ``rank``. Shards are disjoint up to those padding repeats,
    and their union is the subset. With ``chunks`` the permutation is ``chunk_aware_order``'s,
    padded with its last samples, and each rank takes a contiguous block of it.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in 0..{world_size - 1}, got {rank}")
    if chunks is not None:
        order = chunk_aware_order(subset, chunks, seed, epoch)
        per = per_rank(order.numel(), world_size)
        padding = per * world_size - order.numel()  # from the end: those samples' chunks are the last rank's
        order = torch.cat([order, order.flip(0).repeat(math.ceil(padding / max(order.numel(), 1)))[:padding]])
        return order[rank * per:(rank + 1) * per]
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
        return shard_order(self.dap.subset, self.dap.seed, self.dap.epoch, self.rank, self.world_size, self.dap.chunks)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())


class ShardedSampler(DaPSampler):
    """``DaPSampler`` over a sharded engine (``sharded_engine``): the same shard of the same order,
    which that engine draws at ``end_epoch`` for its own rank only (no rank holds the whole subset)."""

    def __len__(self) -> int:
        return per_rank(self.dap.subset_size, self.world_size)

    def indices(self) -> torch.Tensor:
        return self.dap.shard(self.rank, self.world_size)
