"""``DropAndPick(..., shard_state=True)``: each rank holds the state of its own slice of the samples.

Rank r of W owns the contiguous slice ``sharded.slice_bounds(N, W)[r:r + 2]``: the subset and the
excluded samples as bitmaps, the loss statistics and the rule's per-sample state (the EMA rule's
average, the trusted rule's statistics) of that slice only. During an epoch a rank records its own
shard's samples (the sampler's, spread over all slices) in arrays over that shard. ``end_epoch``:

1. sends each record to the rank that owns its sample (``distributed.combine_owned_losses``, one
   all-to-all, 9 bytes a record), which merges them as ``combine_losses`` does;
2. decides on the owned slices: ``sharded.select_rule`` keeps exactly the members the rule keeps
   unsharded (a few histograms all-reduced per selection, whatever N);
3. all-gathers the bitmaps (N/8 bytes) and draws the next epoch's order as ``sampler.shard_order``
   draws it, the unsharded engine's, keeping this rank's shard. The one O(N) step: every rank
   draws the permutation of all n members (8 bytes each, transient; with ``chunks``, the
   chunk-aware order of the whole subset).

Construction, ``end_epoch``, ``load_state_dict``, ``gather_subset`` and ``suspects`` are collective.
``subset`` and ``losses`` (N samples on one rank) are refused: ``subset_size``, ``members()`` and
``gather_subset()`` stand in; ``record`` and ``skip`` take this rank's shard only. Subsets, events
and compute are the unsharded engine's, bit for bit (tests/test_sharded.py).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from . import distributed
from .engine import STATE_FORMAT, DropAndPick, NonFiniteLossError
from .policies import DROP, EXCLUDE, PICK, Policy, Scheduled
from .policies.selective_backprop import refuse_other_scores
from .records import checked_batch, engine_policy, write_records
from .scores import batch_scores, check_score
from .sampler import DaPSampler, ShardedSampler, shard_order
from .schedule import DaPSchedule, require_int
from .seeding import generator
from .sharded import (Ranks, find_sorted, pack, select_hardest_sharded, shard_of, slice_bounds, slice_mask, sorted_unique,
                      subset_of, unpack)
from .sharded_rules import check_shardable, rule_values, select_rule
from .sharded_state import Resharder, shards_to_read, state_problem
from .suspects import LossStats


class ShardedDropAndPick(DropAndPick):
    """``DropAndPick`` holding only this rank's slice of the state (module docstring). Build it as
    ``DropAndPick(..., shard_state=True)`` on every rank, once the process group is initialised."""

    def __init__(self, num_samples: int, schedule: DaPSchedule, policy="dap", seed: int = 0,
                 labels: Optional[torch.Tensor] = None, target_compute: Optional[float] = None,
                 infobatch_ratio: float = 0.5, infobatch_delta: float = 0.875, exclude_nonfinite: bool = False,
                 epsilon: Optional[float] = None, ema_beta: Optional[float] = None, chunks=None,
                 score: str = "loss", shard_state: bool = True):
        self.policy: Policy = engine_policy(num_samples, schedule, policy, target_compute=target_compute, labels=labels,
                                            infobatch_ratio=infobatch_ratio, infobatch_delta=infobatch_delta,
                                            epsilon=epsilon, ema_beta=ema_beta)
        self.num_samples, self.schedule, self.seed, self.chunks = num_samples, schedule, int(seed), chunks
        check_shardable(self.policy)
        self._plan = self.policy.plan(schedule, num_samples)
        self.exclude_nonfinite, self.score = bool(exclude_nonfinite), check_score(score)
        refuse_other_scores(self.policy, self.score)
        self.epoch = 1
        self.rank, self.world = distributed.rank_and_world()
        self.lo, self.hi = slice_bounds(num_samples, self.world)[self.rank:self.rank + 2]  # the owned slice
        self._ranks = Ranks(distributed.all_reduce_counts, self.rank, self.world)
        self.samples_per_epoch: list[int] = []
        self.excluded: Optional[torch.Tensor] = None  # bitmap of the slice: non-finite or skipped, left out for good
        self.last_nonfinite = self.last_skipped = torch.zeros(0, dtype=torch.int64)
        self.loss_stats = LossStats(self.hi - self.lo)
        self._bits: Optional[torch.Tensor] = None  # the subset's members in the slice, a bitmap
        self._set_members(slice_mask(self.policy.first_subset(schedule, num_samples, self.seed), self.lo, self.hi))
        self._draw_shard()

    # -- the training loop's calls ---------------------------------------------------------

    def sampler(self, rank: Optional[int] = None, world_size: Optional[int] = None) -> DaPSampler:
        return ShardedSampler(self, rank=rank, world_size=world_size)

    def shard(self, rank: int, world_size: int) -> torch.Tensor:
        """This epoch's sample indices for this rank (``sampler.shard_order``'s), as a LongTensor."""
        if (rank, world_size) != (self.rank, self.world):
            raise ValueError(f"with shard_state=True, rank {self.rank} of {self.world} holds only its own shard; "
                             f"rank {rank} of {world_size}'s needs the whole subset, which no rank holds")
        return torch.from_numpy(self._order.astype(np.int64))

    def record(self, indices: torch.Tensor, losses: torch.Tensor, logits: Optional[torch.Tensor] = None,
               targets: Optional[torch.Tensor] = None) -> None:
        """``DropAndPick.record``, for samples of this rank's shard. The sampler's next batch is known by a
        comparison with the order; any other is searched for now (slower: cache misses); ``flush`` finds
        them all in the shard at once, in sorted order, and writes the losses, which stay where computed."""
        if self.done:
            raise RuntimeError(f"all {self._plan.epochs} epochs have ended; nothing more to record")
        indices = checked_batch(indices, losses, self.num_samples)
        ahead = self._order[self._cursor:self._cursor + indices.numel()]
        if ahead.size == indices.numel() and np.array_equal(ahead, indices.numpy()):
            self._cursor += indices.numel()
        else:
            self._shard_positions(indices)  # refuses samples outside the shard, naming them
        self._pending.append((indices.to(torch.int32 if self._order.dtype == np.int32 else torch.int64, copy=True),
                              batch_scores(self.score, losses, logits, targets)))

    def flush(self) -> None:
        if self._pending:
            positions = self._shard_positions(torch.cat([i for i, _ in self._pending]))
            write_records(self._local_losses, self._local_seen, list(zip(
                positions.split([i.numel() for i, _ in self._pending]), (v for _, v in self._pending))))
        self._pending = []

    def skip(self, indices: torch.Tensor) -> None:
        self.flush()
        positions = self._shard_positions(torch.as_tensor(indices, dtype=torch.int64).cpu())
        self._local_seen[positions], self._local_losses[positions] = 3, float("-inf")

    @property
    def losses(self) -> torch.Tensor:
        raise ValueError("with shard_state=True no rank holds a loss for every sample: each rank owns its slice's")

    @property
    def subset(self) -> torch.Tensor:
        raise ValueError("with shard_state=True no rank holds the whole subset: use dap.subset_size, dap.members() "
                         "(this rank's slice) or dap.gather_subset() (collective: every rank calls it)")

    def end_epoch(self) -> Optional[str]:
        if self.done:
            raise RuntimeError(f"all {self._plan.epochs} epochs have already ended")
        self.flush()
        recorded = self._local_seen > 0  # to the samples' owners, merged there
        losses, seen = distributed.combine_owned_losses(self._shard_samples[recorded.numpy()], self._local_losses[recorded],
                                                        self._local_seen[recorded], slice_bounds(self.num_samples, self.world),
                                                        self.rank)
        n_bad, n_skipped, n_seen = (int(c) for c in self._sum([np.count_nonzero(seen == 2),
                                                               np.count_nonzero(seen == 3), np.count_nonzero(seen)]))
        empty = torch.zeros(0, dtype=torch.int64)
        self.last_nonfinite = self._nonfinite(self._gather_ids(seen == 2) if n_bad else empty)
        self.last_skipped = self._gather_ids(seen == 3) if n_skipped else empty
        if n_bad or n_skipped:
            left_out = seen >= 2
            losses[left_out] = -np.inf  # another rank may have recorded a finite loss for it
            self.excluded = pack(left_out | (False if self.excluded is None else self._unpack(self.excluded)))
        self.loss_stats.update(torch.from_numpy(losses), torch.from_numpy(seen == 1))
        recorded = n_seen - n_skipped  # record() takes this rank's shard only: every recorded sample trained
        self.samples_per_epoch.append(recorded)
        event = None
        if self.epoch < self._plan.epochs:  # nothing is decided after the last epoch
            change = self._decide(losses, recorded)
            if change is not None and self._set_members(change[0]):
                event = change[1]
        if (n_bad or n_skipped) and self._set_members(self.members().numpy()):
            event = EXCLUDE
        self.epoch += 1
        self._draw_shard()
        return event

    # -- what it tells -----------------------------------------------------------------------

    def members(self) -> torch.Tensor:
        """This rank's slice of the subset: a bool mask over samples ``lo .. hi - 1``."""
        return torch.from_numpy(self._unpack(self._bits))

    def gather_subset(self) -> torch.Tensor:
        """The whole subset as sorted indices (collective: the ranks all-gather their bitmaps, N/8 bytes,
        and each builds the indices, 8 bytes a member)."""
        return subset_of(distributed.all_gather_uneven(self._bits), slice_bounds(self.num_samples, self.world))

    def suspects(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``DropAndPick.suspects`` (collective): the ``k`` highest mean losses, ties to the lower index."""
        k = min(require_int("k", k, 1), self.num_samples)
        scores = self.loss_stats.scores().numpy()
        [mine] = select_hardest_sharded([scores], [np.ones(scores.size, dtype=bool)], k, self._ranks)
        ids = self._gather_ids(mine)
        values = torch.cat(distributed.all_gather_uneven(torch.from_numpy(scores[mine])))
        order = torch.sort(-values, stable=True).indices  # ids ascend: equal scores keep the lower index first
        return ids[order], values[order]

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """This rank's shard of the state; a checkpoint holds one per rank."""
        self.flush()
        recorded = self._local_seen > 0
        return {
            "format": STATE_FORMAT, "shard": {"rank": self.rank, "world": self.world, "lo": self.lo, "hi": self.hi},
            "num_samples": self.num_samples, "schedule": self.schedule.to_dict(), "policy": self.policy.name,
            "policy_params": self.policy.params(), "score": self.score, "seed": self.seed, "epoch": self.epoch,
            "samples_per_epoch": list(self.samples_per_epoch), "members": self._bits.clone(),
            "excluded": None if self.excluded is None else self.excluded.clone(),
            "policy_state": self.policy.state_dict(), "loss_stats": self.loss_stats.state_dict(),
            "records": {"samples": torch.from_numpy(self._shard_samples.astype(np.int64))[recorded],
                        "losses": self._local_losses[recorded], "seen": self._local_seen[recorded]},
        }

    def load_state_dict(self, state) -> None:
        """Load this rank's shard (collective; ``sharded_state``). ``state``: the ``state_dict()`` this
        rank saved, or every rank's, in rank order, from a run of this world size or another."""
        ranks, used, same = shards_to_read(state, self.num_samples, self.world, self.rank)
        expected = {"num_samples": self.num_samples, "schedule": self.schedule.to_dict(), "policy": self.policy.name,
                    "policy_params": self.policy.params(), "score": self.score}
        problem = next(filter(None, (state_problem(s, used[0], expected, STATE_FORMAT, r, same)
                                     for r, s in zip(ranks, used))), None)
        if distributed.any_rank(problem is not None):  # every rank stops, not only those that found it
            raise ValueError(problem or "another rank could not load its shard of this state (its error says why)")
        head = used[0] if used else (state if isinstance(state, dict) else state[0])
        take = Resharder(used, self.lo, self.hi)
        self.seed, self.epoch = int(head["seed"]), int(head["epoch"])
        self.samples_per_epoch = [int(n) for n in head["samples_per_epoch"]]
        self.excluded = None if head["excluded"] is None else pack(take.bits("excluded"))
        self.loss_stats.load_state_dict(take.tree(head["loss_stats"], "loss_stats"))
        self.policy.load_state_dict(take.tree(head["policy_state"], "policy_state"))
        self._bits = None
        self._set_members(take.bits("members"))
        self._draw_shard()
        if same:  # the same shard of the same order: this epoch's records go back where they were
            records = head["records"]
            positions = self._shard_positions(records["samples"])
            self._local_losses[positions], self._local_seen[positions] = records["losses"], records["seen"]

    # -- internals ---------------------------------------------------------------------------

    def _unpack(self, bitmap: torch.Tensor) -> np.ndarray:
        return unpack(bitmap, self.hi - self.lo)

    def _sum(self, values: Sequence[int]) -> np.ndarray:
        return distributed.all_reduce_counts([np.array(values, dtype=np.int64)])

    def _gather_ids(self, mask: np.ndarray) -> torch.Tensor:
        """The samples of every rank's ``mask``, sorted (collective)."""
        return torch.cat(distributed.all_gather_uneven(torch.from_numpy(np.flatnonzero(mask) + self.lo)))

    def _set_members(self, mask: np.ndarray) -> bool:
        """Make ``mask`` this rank's members, less any excluded samples (collective); whether the
        subset changed on any rank."""
        if self.excluded is not None:
            mask = mask & ~self._unpack(self.excluded)
        bits = pack(mask)
        changed = self._bits is None or not torch.equal(bits, self._bits)
        counts = np.zeros(self.world + 1, dtype=np.int64)
        counts[self.rank], counts[-1] = np.count_nonzero(mask), changed
        counts = distributed.all_reduce_counts([counts])
        if counts[:-1].sum() == 0:
            raise NonFiniteLossError(f"epoch {self.epoch}: every sample of the subset has been excluded for a "
                                     "non-finite loss; lower the learning rate or check the data")
        self._bits, self.subset_size = bits, int(counts[:-1].sum())
        return bool(counts[-1])

    def _draw_shard(self) -> None:
        """This rank's shard of the epoch's order, and the arrays its records go into (module docstring, 3)."""
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._cursor = 0  # where the sampler's next batch starts in the order (record)
        order = np.zeros(0, dtype=np.int64)
        if not self.done and self.chunks is None:  # shard_order's draw, without the subset's indices
            order = shard_of(distributed.all_gather_uneven(self._bits), slice_bounds(self.num_samples, self.world),
                             self.subset_size, generator(self.seed, self.epoch, "order"), self.rank, self.world)
        elif not self.done:
            order = shard_order(self.gather_subset(), self.seed, self.epoch, self.rank, self.world, self.chunks).numpy()
        # the order and its samples sorted (which record() searches), int32 where N allows: half of int64
        self._order = order.astype(np.int32 if self.num_samples <= np.iinfo(np.int32).max else np.int64)
        samples = self._shard_samples = sorted_unique(self._order)  # padding may repeat a sample
        self._local_losses = torch.full((samples.size,), float("inf"))
        self._local_seen = torch.zeros(samples.size, dtype=torch.uint8)

    def _shard_positions(self, indices: torch.Tensor) -> torch.Tensor:
        """Where ``indices`` sit in this epoch's shard, or a ValueError naming the samples outside it."""
        ids = indices.numpy()
        positions, inside = find_sorted(self._shard_samples, ids)
        if not inside.all():
            where = ("are not in the current subset. Load batches with sampler=dap.sampler() and pass the indices "
                     "IndexedDataset returns." if self.world == 1 else
                     f"are not in rank {self.rank}'s shard (world size {self.world}). Load batches with "
                     "sampler=dap.sampler() on every rank, so that each rank trains on and records only its own shard.")
            raise ValueError(f"epoch {self.epoch}: samples {ids[~inside][:10].tolist()} {where}")
        return torch.from_numpy(positions.astype(np.int32))

    def _decide(self, losses: np.ndarray, recorded: int) -> Optional[tuple[np.ndarray, str]]:
        """``Scheduled.end_epoch`` on the owned slices: (this rank's new members, the event), or None.
        Policies of their own timing decide nothing after their first subset (``check_shardable``)."""
        if type(self.policy) is not Scheduled:
            return None
        rule = self.policy.rule
        if hasattr(rule, "observe"):
            rule.observe(torch.from_numpy(losses))  # the EMA and the trusted rule's statistics: of this slice
        scheduled = self.schedule.event_after(self.epoch)
        if scheduled == PICK:
            return np.ones(self.hi - self.lo, dtype=bool), PICK
        k = self.schedule.kept_at_drop(self.subset_size, self.num_samples)
        if scheduled != DROP or k == self.subset_size:
            return None
        if recorded == 0:
            raise RuntimeError(f"epoch {self.epoch} is a drop epoch but no loss was recorded for the subset: "
                               "call dap.record(indices, per_sample_losses) for every training batch.")
        values = rule_values(rule)
        [keep] = select_rule(rule, [self.members().numpy()], [losses], k, generator(self.seed, self.epoch, "select"),
                             self._ranks, self.num_samples, None if values is None else [values])
        return keep, DROP


DropAndPick._sharded = ShardedDropAndPick  # what DropAndPick(..., shard_state=True) builds
