"""``DropAndPick``: the stateful selection engine a training loop talks to.

It records per-sample losses while an epoch trains, and at the end of the epoch applies the
schedule's decision (drop or pick) to the subset the next epoch trains on. All of its state is
visible attributes that ``state_dict`` saves; the decisions themselves are the pure functions
in ``schedule`` and ``selection``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import distributed
from .sampler import DaPSampler, shard_order
from .schedule import DROP, PICK, DaPSchedule, Plan, keep_count
from .seeding import generator
from .selection import (hardest_in_subset, mask_indices, select_hardest, select_infobatch, select_random,
                        select_static)

POLICIES = ("dap", "random", "full", "scaled", "static", "infobatch")
NEVER_DROP = ("full", "scaled", "static", "infobatch")  # policies that ignore the schedule's drops
STATE_FORMAT = 2


class NonFiniteLossError(FloatingPointError):
    """A recorded loss was NaN or infinite; the message names the epoch and the samples."""


class DropAndPick:
    """Drop-and-Pick over ``num_samples`` samples.

    policy: "dap" keeps the highest-loss samples at a drop (the paper); "random" keeps a
        uniform random choice of the same size on the same schedule (Table 2f, "Random");
        "full" never drops (the all-data baseline, with the same epochs and picks);
        "scaled" is "full" for a trainer that shortened the schedule to the same compute
        (Table 2f, "All data 63% epochs"); "static" trains every epoch on one fixed random
        subset of ``target_compute * N`` samples, stratified by ``labels`` (Table 2f, "63%
        data"); "infobatch" prunes a random ``infobatch_ratio`` of the below-mean-loss samples
        every epoch and up-weights the rest (``batch_weights``), with all data for the epochs
        after ``infobatch_delta * E`` (Qin et al., ICLR 2024).
    seed: seeds the sampler's order and the random choices, per epoch (see ``seeding``).
    target_compute: the compute fraction "static" matches; default: this schedule's DaP plan.

    Rules the paper leaves open:
    - Only losses recorded in the current epoch count (Algorithm 1 empties L every epoch).
    - A subset member with no loss recorded this epoch (``drop_last``, an interrupted loader)
      is kept at a drop: we have no evidence that it is easy. Among equal losses the lower
      sample index is kept.
    - The loss of a sample seen twice in an epoch (sampler padding) is the last one recorded
      on a rank, and the maximum across ranks.
    - Under torch.distributed a rank records only samples of its own shard (``sampler()``).
    - ``record`` keeps each batch's losses where they were computed and ``flush`` copies the
      epoch's into ``losses`` in one transfer (``end_epoch`` and ``state_dict`` call it): a
      copy to the host per batch would make the CPU wait for the GPU at every step.
    - A NaN or infinite loss stops the run at ``end_epoch`` (``NonFiniteLossError``). With
      ``exclude_nonfinite=True`` those samples are instead left out of the subset from the next
      epoch on, picks included, and listed in ``last_nonfinite``; the run's compute then falls
      short of ``plan()`` by what they would have cost.
    """

    def __init__(self, num_samples: int, schedule: DaPSchedule, policy: str = "dap", seed: int = 0,
                 labels: Optional[torch.Tensor] = None, target_compute: Optional[float] = None,
                 infobatch_ratio: float = 0.5, infobatch_delta: float = 0.875, exclude_nonfinite: bool = False):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
        if not isinstance(schedule, DaPSchedule):
            raise ValueError(f"schedule must be a DaPSchedule, got {type(schedule).__name__}")
        if target_compute is None:
            target_compute = schedule.plan(num_samples).compute_fraction
        if not 0.0 < target_compute <= 1.0:
            raise ValueError(f"target_compute must lie in (0, 1], got {target_compute}")
        if not 0.0 <= infobatch_ratio < 1.0 or not 0.0 < infobatch_delta <= 1.0:
            raise ValueError(f"infobatch_ratio must lie in [0, 1) and infobatch_delta in (0, 1]; "
                             f"got {infobatch_ratio} and {infobatch_delta}")
        self.num_samples = num_samples
        self.schedule = schedule
        self.policy = policy
        self.seed = int(seed)
        self.target_compute = float(target_compute)
        self.infobatch_ratio, self.infobatch_delta = float(infobatch_ratio), float(infobatch_delta)
        self.epoch = 1  # the epoch being trained, 1-based as in Algorithm 1
        self._losses = torch.zeros(num_samples, dtype=torch.float32)  # last loss recorded per sample (``losses``)
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (indices, losses) recorded since flush()
        self.seen = torch.zeros(num_samples, dtype=torch.bool)  # recorded during this epoch
        self.scored = torch.zeros(num_samples, dtype=torch.bool)  # recorded in any epoch (InfoBatch)
        self.weights: Optional[torch.Tensor] = None  # per-sample loss weights (InfoBatch only)
        self.samples_per_epoch: list[int] = []  # samples trained on in each finished epoch
        self.exclude_nonfinite = bool(exclude_nonfinite)
        self.excluded: Optional[torch.Tensor] = None  # bool mask: non-finite loss, never trained on again
        self.last_nonfinite = torch.zeros(0, dtype=torch.int64)  # samples excluded by the last end_epoch
        self._shard_key: Optional[tuple] = None  # (epoch, rank, world) of the cached shard (see shard)
        if policy == "static":
            k = max(1, round(self.target_compute * num_samples))
            self._set_subset(select_static(num_samples, k, generator(self.seed, "static"), labels))
        else:
            self._set_subset(torch.arange(num_samples))

    # -- the training loop's calls ---------------------------------------------------------

    def sampler(self, rank: Optional[int] = None, world_size: Optional[int] = None) -> DaPSampler:
        """A sampler over the current subset; rank and world size default to torch.distributed's."""
        return DaPSampler(self, rank=rank, world_size=world_size)

    def record(self, indices: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the per-sample losses of one batch (``reduction="none"``), as trained on."""
        if self.done:
            raise RuntimeError(f"all {self.schedule.epochs} epochs have ended; nothing more to record")
        indices = torch.as_tensor(indices)
        if losses.dim() != 1 or losses.numel() != indices.numel():
            raise ValueError(
                f"record() needs one loss per sample: got losses of shape {tuple(losses.shape)} for "
                f"{indices.numel()} indices. Compute the loss with reduction='none', e.g. "
                "F.cross_entropy(logits, targets, reduction='none'), and take .mean() for backward."
            )
        if indices.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"indices must be an integer tensor (int64), got {indices.dtype}")
        indices = indices.to("cpu", torch.int64)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_samples):
            raise ValueError(f"sample indices must lie in 0..{self.num_samples - 1}; got {indices.min()}..{indices.max()}")
        outside = ~self._in_subset[indices]
        if bool(outside.any()):
            raise ValueError(
                f"epoch {self.epoch}: samples {indices[outside][:10].tolist()} are not in the current subset. "
                "Load batches with sampler=dap.sampler() and pass the indices IndexedDataset returns."
            )
        rank, world = distributed.rank_and_world()
        if world > 1:
            foreign = ~self._shard_mask(rank, world)[indices]
            if bool(foreign.any()):
                raise ValueError(
                    f"epoch {self.epoch}: samples {indices[foreign][:10].tolist()} are not in rank {rank}'s shard "
                    f"(world size {world}). Load batches with sampler=dap.sampler() on every rank, so that each "
                    "rank trains on and records only its own shard."
                )
        # Copies (the caller may reuse its tensors), kept until flush(): the losses where they were
        # computed (no host sync), the indices as int32 where N allows, half the memory of int64.
        index_dtype = torch.int32 if self.num_samples <= torch.iinfo(torch.int32).max else torch.int64
        self._pending.append((indices.to(index_dtype, copy=True), losses.detach().to(torch.float32, copy=True)))
        self.seen[indices] = True

    def flush(self) -> None:
        """Move the losses recorded since the last flush into ``losses``: one copy to the host."""
        if not self._pending:
            return
        values = torch.cat([v for _, v in self._pending]).cpu().split([i.numel() for i, _ in self._pending])
        for (indices, _), v in zip(self._pending, values):  # in record order: a sample's last loss wins
            self._losses[indices] = v
        self._pending = []

    @property
    def losses(self) -> torch.Tensor:
        """The last loss recorded for each sample (float32, CPU); reading it flushes first."""
        self.flush()
        return self._losses

    @losses.setter
    def losses(self, value: torch.Tensor) -> None:
        self._pending = []
        self._losses = value

    def batch_weights(self, indices: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-sample loss weights for a batch, or None when the policy weights nothing.

        Use as ``(losses * w.to(losses.device)).mean()``; record the unweighted losses.
        """
        return None if self.weights is None else self.weights[torch.as_tensor(indices).cpu()]

    def end_epoch(self) -> Optional[str]:
        """Close the epoch: count it, then drop or pick for the next one. Returns the event."""
        if self.done:
            raise RuntimeError(f"all {self.schedule.epochs} epochs have already ended")
        self.flush()
        self.losses, self.seen = distributed.combine_losses(self.losses, self.seen)
        if bool(torch.isfinite(torch.stack(torch.aminmax(self.losses))).all()):  # one pass; NaN propagates
            bad, ids = None, torch.zeros(0, dtype=torch.int64)  # the usual case: no full-length masks
        else:
            bad = self.seen & ~torch.isfinite(self.losses)
            ids = bad.nonzero().squeeze(1)
        self.last_nonfinite = ids
        if ids.numel() and not self.exclude_nonfinite:
            raise NonFiniteLossError(
                f"epoch {self.epoch}: non-finite loss for {ids.numel()} samples, indices {ids[:20].tolist()}"
                + (" ..." if ids.numel() > 20 else "")
                + ". Lower the learning rate or check those samples' inputs and labels "
                "(or set exclude_nonfinite, --exclude-nonfinite, to leave such samples out and train on)."
            )
        if ids.numel():
            # Ranked below every finite loss, so a drop still keeps its planned number of samples;
            # _set_subset then leaves them out of every later subset.
            self.excluded = bad if self.excluded is None else self.excluded | bad
            self.losses[bad] = float("-inf")
        # (count_nonzero of two masks: a gather by subset and a bool sum() cost ~10x more at 14M samples)
        self.samples_per_epoch.append(int(torch.count_nonzero(self.seen & self._in_subset)))
        self.scored |= self.seen if self.excluded is None else self.seen & ~self.excluded
        event = self.schedule.event_after(self.epoch)
        if self.policy == "infobatch":
            self._infobatch_next()
        elif event == PICK and self.policy != "static":
            self._set_subset(torch.arange(self.num_samples))
        elif event == DROP and self.policy not in NEVER_DROP:
            self._set_subset(self._drop())
        if ids.numel():
            self._set_subset(self.subset)  # no decision this epoch: the exclusion still applies
        self.seen.zero_()
        self.epoch += 1
        return event

    # -- what it tells -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.epoch > self.schedule.epochs

    @property
    def samples_seen(self) -> int:
        return sum(self.samples_per_epoch)

    @property
    def compute_fraction(self) -> float:
        """Samples trained on so far / (epochs so far * N); 0.0 before the first epoch ends."""
        if not self.samples_per_epoch:
            return 0.0
        return self.samples_seen / (len(self.samples_per_epoch) * self.num_samples)

    def plan(self) -> Plan:
        """The planned subset sizes of this engine's whole run (its policy included).

        InfoBatch's sizes depend on the losses, so its plan is the all-data upper bound.
        """
        if self.policy == "static":
            k = self.subset.numel()
            return Plan(self.num_samples, (k,) * self.schedule.epochs, (None,) * self.schedule.epochs)
        return self.schedule.plan(self.num_samples, drops=self.policy not in NEVER_DROP)

    # -- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        self.flush()
        return {
            "format": STATE_FORMAT,
            "num_samples": self.num_samples,
            "schedule": self.schedule.to_dict(),
            "policy": self.policy,
            "seed": self.seed,
            "policy_params": self._policy_params(),
            "epoch": self.epoch,
            "subset": self.subset.clone(),
            "losses": self.losses.clone(),
            "seen": self.seen.clone(),
            "scored": self.scored.clone(),
            "weights": None if self.weights is None else self.weights.clone(),
            "samples_per_epoch": list(self.samples_per_epoch),
            "excluded": None if self.excluded is None else self.excluded.clone(),
        }

    def _policy_params(self) -> dict:
        return {"target_compute": self.target_compute, "infobatch_ratio": self.infobatch_ratio,
                "infobatch_delta": self.infobatch_delta}

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"DropAndPick state has format {state.get('format')!r}; this version reads {STATE_FORMAT}")
        expected = {"num_samples": self.num_samples, "schedule": self.schedule.to_dict(), "policy": self.policy,
                    "policy_params": self._policy_params()}
        for key, mine in expected.items():
            if state[key] != mine:
                raise ValueError(
                    f"cannot load a DropAndPick state made for {key}={state[key]!r} into one with {key}={mine!r}"
                    + (" (has the dataset changed size?)" if key == "num_samples" else "")
                )
        subset = state["subset"]
        if subset.numel() < 1 or int(subset.max()) >= self.num_samples or not bool((subset[1:] > subset[:-1]).all()):
            raise ValueError("DropAndPick state holds an invalid subset (must be sorted, unique, within 0..N-1)")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.losses = state["losses"].to(torch.float32).clone()
        self.seen = state["seen"].to(torch.bool).clone()
        self.scored = state["scored"].to(torch.bool).clone()
        self.weights = None if state["weights"] is None else state["weights"].to(torch.float32).clone()
        self.samples_per_epoch = [int(n) for n in state["samples_per_epoch"]]
        excluded = state.get("excluded")  # absent in states saved before exclude_nonfinite existed
        self.excluded = None if excluded is None else excluded.to(torch.bool).clone()
        self._set_subset(subset.to(torch.int64).clone())

    # -- internals ---------------------------------------------------------------------------

    def _drop(self) -> torch.Tensor:
        k = keep_count(self.subset.numel(), self.schedule.keep)
        if self.policy == "random":
            return select_random(self.subset, k, generator(self.seed, self.epoch, "random-drop"))
        if self.samples_per_epoch[-1] == 0:  # this epoch's count of subset members seen
            raise RuntimeError(
                f"epoch {self.epoch} is a drop epoch but no loss was recorded for the subset: "
                "call dap.record(indices, per_sample_losses) for every training batch."
            )
        # A mask over all samples (_set_subset takes either): no gather of the subset's losses,
        # no scatter of the kept ones back into _in_subset (see selection.hardest_in_subset).
        keep = hardest_in_subset(self.losses, self.seen, self._in_subset, k)
        if keep is None:  # fewer than k members above -inf (excluded samples): rank within the subset
            unseen_kept = torch.where(self.seen, self.losses, torch.full_like(self.losses, float("inf")))
            return select_hardest(self.subset, unseen_kept, k)
        return keep

    def _infobatch_next(self) -> None:
        # The epoch after this one trains on all data once it is past delta * E ("annealing").
        if self.epoch + 1 > round(self.infobatch_delta * self.schedule.epochs):
            subset, self.weights = torch.arange(self.num_samples), None
        else:
            subset, self.weights = select_infobatch(self.losses, self.scored, self.infobatch_ratio,
                                                    generator(self.seed, self.epoch, "infobatch"))
        self._set_subset(subset)

    def _set_subset(self, subset: torch.Tensor) -> None:
        """Make ``subset`` current: sorted sample indices, or a boolean mask over all samples."""
        mask = subset if subset.dtype == torch.bool else None
        if mask is not None:
            subset = mask_indices(mask)  # sorted
        if self.excluded is not None and bool(self.excluded[subset].any()):
            subset = subset[~self.excluded[subset]]
            mask = None
            if subset.numel() == 0:
                raise NonFiniteLossError(f"epoch {self.epoch}: every sample of the subset has been excluded for a "
                                         "non-finite loss; lower the learning rate or check the data")
        self.subset = subset
        if mask is not None:
            self._in_subset = mask
        elif subset.numel() == self.num_samples:  # all data (sorted and unique): no scatter
            self._in_subset = torch.ones(self.num_samples, dtype=torch.bool)
        else:
            self._in_subset = torch.zeros(self.num_samples, dtype=torch.bool)
            self._in_subset[subset] = True
        self._shard_key = None

    def _shard_mask(self, rank: int, world_size: int) -> torch.Tensor:
        """Which samples ``sampler(rank, world_size)`` yields this epoch, as a mask cached for the
        epoch (1 byte per sample) for record()'s shard check."""
        key = (self.epoch, rank, world_size)
        if self._shard_key != key:
            self._shard_cache = torch.zeros(self.num_samples, dtype=torch.bool)
            self._shard_cache[shard_order(self.subset, self.seed, self.epoch, rank, world_size)] = True
            self._shard_key = key
        return self._shard_cache
