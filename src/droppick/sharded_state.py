"""The sharded engine's checkpoints: one shard per rank, loaded by the same rank or resharded.

A shard (``ShardedDropAndPick.state_dict``) holds its rank's slice ``lo .. hi - 1`` (``shard``: rank,
world, lo, hi) of every per-sample tensor, and the records of the epoch in progress. A rank of the
same world size loads its own shard, records included, and continues exactly. A rank of another
world size reads the shards that overlap its new slice and joins their parts (``Resharder``); their
records belong to the old ranks' shards, so that needs a state saved between epochs.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .sharded import slice_bounds, unpack


def shards_to_read(state, num_samples: int, world: int, rank: int) -> tuple[list[int], list[dict], bool]:
    """(the old ranks whose shards rank ``rank`` of ``world`` reads, those shards, whether the world
    size is the same). ``state``: one shard, or every rank's shards in rank order (a sequence that
    loads a shard when indexed reads only those)."""
    shards = [state] if isinstance(state, dict) else state
    old = shards[0]["shard"]["world"] if "shard" in shards[0] else None
    same = old == world
    if same and isinstance(state, dict):
        return [rank], [state], True
    if old is None or len(shards) != old:
        raise ValueError(f"this state is one rank's shard of {old}: pass the list of all {old} shards to reshard "
                         f"it over {world} ranks" if old else "not a sharded DropAndPick state: load an unsharded "
                         "engine's state with shard_state=False, or start a new run")
    bounds, (lo, hi) = slice_bounds(num_samples, old), slice_bounds(num_samples, world)[rank:rank + 2]
    ranks = [rank] if same else [r for r in range(old) if bounds[r] < hi and bounds[r + 1] > lo]
    return ranks, [shards[r] for r in ranks], same


def state_problem(state: dict, first: dict, expected: dict, fmt: int, rank: int, same: bool) -> Optional[str]:
    """What keeps ``state``, which should be rank ``rank``'s shard, from loading (with ``first``,
    the first shard read) into an engine whose settings are ``expected`` (num_samples, schedule,
    policy, policy_params, score); None if nothing."""
    if state.get("format") != fmt or "shard" not in state:
        return (f"not a sharded DropAndPick state of format {fmt}: load an unsharded engine's state with "
                "shard_state=False, or start a new run")
    saved = {"score": "loss"} | state  # a state saved before scores existed was ranked by the loss
    for key, mine in expected.items():
        if saved[key] != mine:
            return f"cannot load a DropAndPick state made for {key}={saved[key]!r} into one with {key}={mine!r}"
    if (state["epoch"], state["samples_per_epoch"]) != (first["epoch"], first["samples_per_epoch"]):
        return "the shards of this state come from different epochs: load the shards of one checkpoint"
    if state["shard"]["rank"] != rank:
        return f"rank {rank}'s shard of the state is needed here, not rank {state['shard']['rank']}'s"
    if not same and state["records"]["seen"].numel():
        return (f"the state holds records of the unfinished epoch {state['epoch']}: a resume at another world "
                "size needs a state saved between epochs")
    return None


class Resharder:
    """The parts of some ranks' shards of a state (``shard``: their ``lo`` and ``hi``) that fall on
    the slice ``lo .. hi - 1``, joined: how a rank of another world size loads them."""

    def __init__(self, shards: Sequence[dict], lo: int, hi: int):
        self.shards, self.lo, self.hi = shards, lo, hi

    def _parts(self, get) -> list:
        out = []
        for shard in self.shards:
            s_lo, s_hi = shard["shard"]["lo"], shard["shard"]["hi"]
            a, b = max(self.lo, s_lo) - s_lo, min(self.hi, s_hi) - s_lo
            if a < b:
                out.append((get(shard, s_hi - s_lo), a, b))
        return out

    def bits(self, key: str) -> np.ndarray:
        """A bitmap's part of the slice, as a bool mask (a shard without one: none set)."""
        return np.concatenate([np.zeros(0, dtype=bool)] + [v[a:b] for v, a, b in self._parts(
            lambda s, n: np.zeros(n, dtype=bool) if s[key] is None else unpack(s[key], n))])

    def tree(self, value, *path):
        """``value``, the first shard's entry at ``path``, with every tensor in it joined from the
        shards' parts (the state of a rule that runs sharded holds per-sample tensors only)."""
        if isinstance(value, dict):
            return {k: self.tree(v, *path, k) for k, v in value.items()}
        if not isinstance(value, torch.Tensor):
            return value

        def get(shard, n):
            for key in path:
                shard = shard[key]
            return shard

        return torch.cat([value[:0]] + [v[a:b] for v, a, b in self._parts(get)])
