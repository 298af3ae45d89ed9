"""``DropAndPick``: the stateful engine a training loop talks to.

It records per-sample losses while an epoch trains and, after the epoch, lets its policy
(``policies/``) decide the subset the next epoch trains on. Every counter is a visible
attribute that ``state_dict`` saves; the decisions themselves are the policies' and the pure
functions of ``schedule`` and ``selection``.

Rules the paper leaves open:

- Only losses recorded in the current epoch count: Algorithm 1 empties L every epoch, so
  ``losses`` starts each epoch at +inf ("not recorded").
- A subset member with no loss this epoch (``drop_last``, an interrupted loader) keeps +inf,
  so the paper's rule keeps it at a drop: nothing says it is easy.
- A sample recorded twice in an epoch (sampler padding) counts once; its loss is the last one
  recorded on a rank, and the maximum across ranks.
- A NaN or infinite loss stops the run at ``end_epoch`` (``NonFiniteLossError``). With
  ``exclude_nonfinite=True`` those samples are instead ranked last at this epoch's decision
  and left out of every later subset, picks included; ``last_nonfinite`` lists them and the
  run's compute falls short of ``plan()`` by what they would have cost.
- ``score``: what ranks the samples, the loss (the paper's) or a score of the logits (``scores``); the
  engine keeps it where the loss was, and "loss" above means the recorded score.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import distributed
from .policies import EXCLUDE, EpochEnd, Policy
from .policies.selective_backprop import refuse_other_scores
from .sampler import Chunks, DaPSampler, shard_order
from .plan import Plan
from .schedule import DaPSchedule, require_int
from .records import checked_batch, engine_policy, write_records
from .scores import batch_scores, check_score
from .selection import mask_indices
from .suspects import LossStats

STATE_FORMAT = 4  # 4: InfoBatch counts its samples and ratios (0.3); 3: policies as objects (0.2); 2: 0.1


class NonFiniteLossError(FloatingPointError):
    """A recorded loss was NaN or infinite; the message names the epoch and the samples."""


class DropAndPick:
    """Drop-and-Pick over ``num_samples`` samples.

    - policy: a name from ``policies.POLICIES`` ("dap", the paper's, by default), a ``Policy``,
      or any object with ``select(subset, losses, k, generator)`` (``policies.Scheduled``).
    - seed: seeds the sampler's order and every random choice, per epoch; ``chunks``: chunked data's (``sampler``).
    - labels, target_compute, infobatch_ratio, infobatch_delta, epsilon, ema_beta: the settings of
      the named policies "static", "scaled", "rs2", "infobatch", "epsilon" and "ema"
      (``policies.build_policy``; None: that policy's documented default).
    - score: "loss" (default), "el2n" or "margin" (``scores``): what ``record`` stores and the policy ranks.
    - shard_state: each rank holds the per-sample state of its own slice of the samples only
      (``sharded_engine.ShardedDropAndPick``, which ``DropAndPick(..., shard_state=True)`` builds).
    """

    _sharded: Optional[type] = None  # ShardedDropAndPick: sharded_engine sets it, and droppick imports sharded_engine

    def __new__(cls, *args, shard_state: bool = False, **kwargs):
        return super().__new__(DropAndPick._sharded if shard_state and cls is DropAndPick else cls)

    def __init__(self, num_samples: int, schedule: DaPSchedule, policy="dap", seed: int = 0,
                 labels: Optional[torch.Tensor] = None, target_compute: Optional[float] = None,
                 infobatch_ratio: float = 0.5, infobatch_delta: float = 0.875, exclude_nonfinite: bool = False,
                 epsilon: Optional[float] = None, ema_beta: Optional[float] = None, chunks: Optional[Chunks] = None,
                 score: str = "loss", shard_state: bool = False):
        self.policy: Policy = engine_policy(num_samples, schedule, policy, target_compute=target_compute, labels=labels,
                                            infobatch_ratio=infobatch_ratio, infobatch_delta=infobatch_delta,
                                            epsilon=epsilon, ema_beta=ema_beta)
        self.num_samples, self.schedule, self.seed, self.chunks = num_samples, schedule, int(seed), chunks
        self._plan = self.policy.plan(schedule, num_samples)
        self.exclude_nonfinite, self.score = bool(exclude_nonfinite), check_score(score)
        refuse_other_scores(self.policy, self.score)
        self.epoch = 1  # the epoch being trained, 1-based as in Algorithm 1
        self._losses = torch.full((num_samples,), float("inf"))  # this epoch's (``losses``)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, losses) recorded since flush()
        self.seen = torch.zeros(num_samples, dtype=torch.uint8)  # this epoch: 0 no loss, 1 a loss, 2 non-finite, 3 skip()ped
        self.samples_per_epoch: list[int] = []  # samples trained on in each finished epoch
        self.excluded: Optional[torch.Tensor] = None  # bool mask: non-finite loss, never trained on again
        self.last_nonfinite = torch.zeros(0, dtype=torch.int64)  # samples excluded by the last end_epoch
        self.last_skipped = torch.zeros(0, dtype=torch.int64)  # samples skip()ped in the last epoch
        self._shard_key: Optional[tuple] = None  # (epoch, rank, world) of the cached shard (see _shard_mask)
        self.loss_stats = LossStats(num_samples)  # for suspects(); end_epoch's merged losses: equal on every rank
        first = self.policy.first_subset(schedule, num_samples, self.seed)
        self._set_subset(torch.arange(num_samples) if first is None else first)

    # -- the training loop's calls ---------------------------------------------------------

    def sampler(self, rank: Optional[int] = None, world_size: Optional[int] = None) -> DaPSampler:
        """A sampler over the current subset; rank and world size default to torch.distributed's."""
        return DaPSampler(self, rank=rank, world_size=world_size)

    def record(self, indices: torch.Tensor, losses: torch.Tensor, logits: Optional[torch.Tensor] = None,
               targets: Optional[torch.Tensor] = None) -> None:
        """Record the per-sample losses of one batch (``reduction="none"``), as trained on; with ``score``
        "el2n" or "margin" also its logits and targets (class indices), whose score is stored instead.

        The losses stay where they were computed until ``flush`` copies the epoch's to the host
        in one transfer: a copy per batch would make the CPU wait for the GPU at every step.
        """
        if self.done:
            raise RuntimeError(f"all {self._plan.epochs} epochs have ended; nothing more to record")
        indices = checked_batch(indices, losses, self.num_samples)
        self._refuse(indices, self._in_subset, "are not in the current subset. Load batches with "
                     "sampler=dap.sampler() and pass the indices IndexedDataset returns.")
        rank, world = distributed.rank_and_world()
        if world > 1:
            self._refuse(indices, self._shard_mask(rank, world), f"are not in rank {rank}'s shard (world size "
                         f"{world}). Load batches with sampler=dap.sampler() on every rank, so that each rank "
                         "trains on and records only its own shard.")
        # Copies: the caller may reuse its tensors. int32 indices where N allows: half of int64.
        index_dtype = torch.int32 if self.num_samples <= torch.iinfo(torch.int32).max else torch.int64
        self._pending.append((indices.to(index_dtype, copy=True), batch_scores(self.score, losses, logits, targets)))

    def flush(self) -> None:
        """Move the losses recorded since the last flush into ``losses`` and ``seen`` (``records.write_records``)."""
        write_records(self._losses, self.seen, self._pending)
        self._pending = []

    def skip(self, indices: torch.Tensor) -> None:
        """Samples of this epoch's shard that could not be trained on (an unreadable image): they
        count as not trained and leave every later subset, picks included (``last_skipped``
        lists them after ``end_epoch``; under DDP every rank learns of each rank's)."""
        self.flush()
        indices = torch.as_tensor(indices, dtype=torch.int64).cpu()
        self._refuse(indices, self._in_subset, "are not in the current subset")
        self.seen[indices], self._losses[indices] = 3, float("-inf")

    @property
    def losses(self) -> torch.Tensor:
        """This epoch's loss (the ``score``) of each sample (float32, CPU; +inf: none yet); reading it flushes."""
        self.flush()
        return self._losses

    def batch_weights(self, indices: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-sample loss weights for a batch, or None when the policy weights nothing (all but
        InfoBatch). Use as ``(losses * w.to(losses.device)).mean()``; record the unweighted losses."""
        return self.policy.batch_weights(indices)

    def end_epoch(self) -> Optional[str]:
        """Close the epoch: count it, let the policy decide the next subset, and return the event
        that changed it ("drop", "pick", "prune", "resample", "exclude") or None when the subset stays."""
        if self.done:
            raise RuntimeError(f"all {self._plan.epochs} epochs have already ended")
        self.flush()
        losses, seen = distributed.combine_losses(self._losses, self.seen)
        top = int(seen.max())  # the usual case, 1: one pass over the statuses, no index lists
        bad = (seen == 2).nonzero().squeeze(1) if top >= 2 else torch.zeros(0, dtype=torch.int64)
        self.last_nonfinite = bad = self._nonfinite(bad)
        self.last_skipped = skipped = (seen == 3).nonzero().squeeze(1) if top == 3 else bad[:0]
        for ids in (bad, skipped):
            if ids.numel():
                losses[ids] = float("-inf")  # another rank may have recorded a finite loss for it
                self.excluded = torch.zeros(self.num_samples, dtype=torch.bool) if self.excluded is None else self.excluded
                self.excluded[ids] = True
        self.loss_stats.update(losses, seen == 1)
        # record() refuses non-members, so every recorded sample trained; skipped ones did not
        recorded = int(torch.count_nonzero(seen)) - skipped.numel()
        self.samples_per_epoch.append(recorded)
        event = None
        if self.epoch < self._plan.epochs:  # nothing is decided after the last epoch
            change = self.policy.end_epoch(EpochEnd(
                self.epoch, self.schedule, self.schedule.event_after(self.epoch), self.subset, self._in_subset,
                losses, recorded, self.seed, self.score))
            if change is not None and self._set_subset(change.subset):
                event = change.event
        if (bad.numel() or skipped.numel()) and self._set_subset(self.subset):  # no decision, or none that changed it
            event = EXCLUDE
        self._losses.fill_(float("inf"))
        self.seen.zero_()
        self.epoch += 1
        return event

    # -- what it tells -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.epoch > self._plan.epochs

    @property
    def samples_seen(self) -> int:
        return sum(self.samples_per_epoch)

    @property
    def compute_fraction(self) -> float:
        """Samples trained on so far over the all-data run's E * N: at the end, the paper's
        "computation" (Section 4.1); ``plan().compute_fraction`` before training."""
        return self.samples_seen / self._plan.full_samples

    def suspects(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, scores): the ``k`` samples whose label is most likely wrong, first the most (``suspects``)."""
        return self.loss_stats.top(require_int("k", k, 1))

    def plan(self) -> Plan:
        """The planned subset sizes of this engine's whole run, its policy's timing included.
        InfoBatch's sizes depend on the losses: its plan is the all-data upper bound."""
        return self._plan

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        self.flush()
        return {
            "format": STATE_FORMAT, "num_samples": self.num_samples, "schedule": self.schedule.to_dict(),
            "policy": self.policy.name, "policy_params": self.policy.params(), "score": self.score, "seed": self.seed,
            "epoch": self.epoch, "subset": self.subset.clone(), "losses": self._losses.clone(),
            "seen": self.seen.clone(), "samples_per_epoch": list(self.samples_per_epoch),
            "excluded": None if self.excluded is None else self.excluded.clone(),
            "policy_state": self.policy.state_dict(), "loss_stats": self.loss_stats.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"DropAndPick state has format {state.get('format')!r}; this version reads format "
                             f"{STATE_FORMAT} (format 3 is droppick 0.2's, 2 is 0.1's): "
                             "finish that run with the version that started it, or start a new run")
        if "shard" in state:
            raise ValueError("this DropAndPick state is one rank's shard of a sharded engine: load it with shard_state=True")
        state = {"score": "loss"} | state  # a state saved before scores existed was ranked by the loss
        expected = {"num_samples": self.num_samples, "schedule": self.schedule.to_dict(), "policy": self.policy.name,
                    "policy_params": self.policy.params(), "score": self.score}
        for key, mine in expected.items():
            if state[key] != mine:
                raise ValueError(
                    f"cannot load a DropAndPick state made for {key}={state[key]!r} into one with {key}={mine!r}"
                    + (" (has the dataset changed size?)" if key == "num_samples" else ""))
        subset = state["subset"]
        if subset.numel() < 1 or int(subset.max()) >= self.num_samples or not bool((subset[1:] > subset[:-1]).all()):
            raise ValueError("DropAndPick state holds an invalid subset (must be sorted, unique, within 0..N-1)")
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self._pending = []
        self._losses = state["losses"].to(torch.float32).clone()
        self.seen = state["seen"].to(torch.uint8).clone()
        self.samples_per_epoch = [int(n) for n in state["samples_per_epoch"]]
        self.excluded = None if state["excluded"] is None else state["excluded"].to(torch.bool).clone()
        self.policy.load_state_dict(state["policy_state"])
        if "loss_stats" in state:  # (none in a state saved before suspects(): it counts from the resume on)
            self.loss_stats.load_state_dict(state["loss_stats"])
        self._set_subset(subset.to(torch.int64).clone())

    # -- internals ---------------------------------------------------------------------------

    def _refuse(self, indices: torch.Tensor, allowed: torch.Tensor, why: str) -> None:
        outside = indices[~allowed[indices]]
        if outside.numel():
            raise ValueError(f"epoch {self.epoch}: samples {outside[:10].tolist()} {why}")

    def _nonfinite(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids``, the samples with a non-finite loss this epoch, unless that stops the run."""
        if ids.numel() and not self.exclude_nonfinite:  # (status 3, skipped, is no loss at all)
            raise NonFiniteLossError(
                f"epoch {self.epoch}: non-finite loss for {ids.numel()} samples, indices {ids[:20].tolist()}"
                + (" ..." if ids.numel() > 20 else "")
                + ". Lower the learning rate or check those samples' inputs and labels "
                "(or set exclude_nonfinite, --exclude-nonfinite, to leave such samples out and train on).")
        return ids

    def _set_subset(self, subset: torch.Tensor) -> bool:
        """Make ``subset`` current (sorted indices, or a bool mask over all samples), less any excluded
        samples; returns whether the subset changed."""
        mask = None  # the subset as a bool mask, when given one: no scatter to rebuild it
        if subset.dtype == torch.bool:
            mask, subset = subset, torch.arange(self.num_samples) if bool(subset.all()) else mask_indices(subset)
        if self.excluded is not None and bool(self.excluded[subset].any()):
            mask, subset = None, subset[~self.excluded[subset]]
            if subset.numel() == 0:
                raise NonFiniteLossError(f"epoch {self.epoch}: every sample of the subset has been excluded for a "
                                         "non-finite loss; lower the learning rate or check the data")
        old = getattr(self, "subset", None)
        if old is not None and old.numel() == subset.numel() and torch.equal(old, subset):
            return False
        self.subset = subset
        if subset.numel() == self.num_samples:  # all data (sorted and unique): no scatter
            self._in_subset = torch.ones(self.num_samples, dtype=torch.bool)
        elif mask is not None:  # a copy: the policy may keep or reuse its mask
            self._in_subset = mask.to("cpu", copy=True)
        else:
            self._in_subset = torch.zeros(self.num_samples, dtype=torch.bool)
            self._in_subset[subset] = True
        self._shard_key = None
        return True

    def _shard_mask(self, rank: int, world_size: int) -> torch.Tensor:
        """Which samples ``sampler(rank, world_size)`` yields this epoch, as a mask cached for the
        epoch (1 byte per sample) for record()'s shard check."""
        key = (self.epoch, rank, world_size)
        if self._shard_key != key:
            self._shard_cache = torch.zeros(self.num_samples, dtype=torch.bool)
            self._shard_cache[shard_order(self.subset, self.seed, self.epoch, rank, world_size, self.chunks)] = True
            self._shard_key = key
        return self._shard_cache
