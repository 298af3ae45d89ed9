"""What a policy is, and the one place a selection rule's answer is checked.

Two kinds of object can be a ``DropAndPick`` policy:

- a **selection rule**: any object with ``select(subset, losses, k, generator)``. The engine
  wraps it in ``Scheduled``, which follows the schedule (Algorithm 1): at each drop it asks
  the rule which ``k`` members to keep, at each pick it returns to all data. The built-in
  rules are ``KeepHardest`` (the paper, ``"dap"``), ``KeepRandom`` (``"random"``),
  ``EpsilonGreedy`` (``"epsilon"``) and ``KeepHardestAverage`` (``"ema"``).
- a **policy with its own timing** (a subclass of ``Policy``): the all-data baselines
  ``Full`` and ``Scaled``, the fixed subset ``Static``, ``RS2``, which samples a fresh chunk
  every epoch, and ``InfoBatch``, which prunes every epoch. It plans its own run and decides
  after every epoch but the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..plan import DROP as DROP, PICK as PICK, Plan  # DROP, PICK: re-exported
from ..schedule import DaPSchedule

PRUNE = "prune"  # InfoBatch's every-epoch choice; DROP and PICK are the schedule's
RESAMPLE = "resample"  # RS2's fresh chunk every epoch
EXCLUDE = "exclude"  # samples with a non-finite loss left the subset (exclude_nonfinite), nothing else changed


@dataclass(frozen=True)
class EpochEnd:
    """What a policy sees after an epoch: everything a decision may depend on."""

    epoch: int  # the epoch that just ended, 1-based
    schedule: DaPSchedule
    scheduled: Optional[str]  # the schedule's event after this epoch: "drop", "pick" or None
    subset: torch.Tensor  # the sorted sample indices this epoch trained on
    in_subset: torch.Tensor  # the same as a bool mask over all N samples
    losses: torch.Tensor  # float32[N]: this epoch's losses (the engine's score); +inf where not recorded, -inf if non-finite
    recorded: int  # how many subset members have a loss this epoch
    seed: int
    score: str = "loss"  # what ``losses`` holds: "loss", "el2n", "margin" or a registered score (``droppick.scores``)

    @property
    def num_samples(self) -> int:
        return self.losses.numel()


@dataclass(frozen=True)
class Change:
    """A policy's decision: the next epoch's subset (sorted indices or a bool mask) and its name."""

    subset: torch.Tensor
    event: str


class Policy:
    """A policy with its own timing. The defaults describe one that trains all data every epoch."""

    name = "policy"

    def plan(self, schedule: DaPSchedule, num_samples: int) -> Plan:
        """Every epoch's subset size, known before training."""
        return Plan(num_samples, (num_samples,) * schedule.epochs, (None,) * schedule.epochs)

    def first_subset(self, schedule: DaPSchedule, num_samples: int, seed: int) -> Optional[torch.Tensor]:
        """The subset of epoch 1 (sorted indices or a bool mask over all N); None for all data."""
        return None

    def end_epoch(self, end: EpochEnd) -> Optional[Change]:
        """The subset for the next epoch, or None to keep the current one."""
        return None

    def batch_weights(self, indices: torch.Tensor) -> Optional[torch.Tensor]:
        """Per-sample loss weights for a batch, or None (unweighted)."""
        return None

    def params(self) -> dict:
        """The settings a saved state must have been made with."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def checked_selection(chosen, end: EpochEnd, k: int, name: str) -> torch.Tensor:
    """A rule's answer as a sorted LongTensor, or a ``ValueError`` naming the rule and what is wrong.

    It must hold exactly ``k`` distinct sample indices, all members of the current subset.
    """
    chosen = torch.as_tensor(chosen)
    if chosen.dim() != 1 or chosen.dtype.is_floating_point or chosen.dtype == torch.bool:
        raise ValueError(f"policy {name}: select() must return a 1-D tensor of sample indices, got "
                         f"{chosen.dtype} of shape {tuple(chosen.shape)}")
    if chosen.numel() != k:
        raise ValueError(f"policy {name}: select() returned {chosen.numel()} indices at the drop after epoch "
                         f"{end.epoch}; the schedule keeps k={k} of the subset's {end.subset.numel()}")
    chosen = chosen.to("cpu", torch.int64)
    if not bool((chosen[1:] > chosen[:-1]).all()):
        chosen = chosen.sort().values
        repeated = chosen[1:][chosen[1:] == chosen[:-1]]
        if repeated.numel():
            raise ValueError(f"policy {name}: select() returned duplicate indices {repeated.unique()[:10].tolist()}; "
                             "each kept sample must appear once")
    if int(chosen[0]) < 0 or int(chosen[-1]) >= end.num_samples:
        raise ValueError(f"policy {name}: select() returned indices outside 0..{end.num_samples - 1} "
                         f"({int(chosen[0])}..{int(chosen[-1])})")
    if end.subset.numel() < end.num_samples:  # from all data every index in range is a member
        outside = chosen[~end.in_subset[chosen]]
        if outside.numel():
            raise ValueError(f"policy {name}: select() returned samples {outside[:10].tolist()} that are not in "
                             "the current subset; keep members of `subset` only")
    return chosen
