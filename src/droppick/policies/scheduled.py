"""``Scheduled``: Algorithm 1's timing around any selection rule.

At each drop of the schedule it keeps ``k = schedule.kept_at_drop(len(subset), N)`` members
(``keep_count(len(subset), p)``, raised to the floor ``min_keep`` when one is set), the ones
the rule selects; at each pick it returns to all data. Because ``k`` is fixed by the schedule
and not by the rule, ``plan()`` and the measured compute are exact whatever the rule does.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..plan import Plan
from ..schedule import DaPSchedule
from ..seeding import generator
from .base import DROP, PICK, Change, EpochEnd, Policy, checked_selection


def rule_name(rule) -> str:
    return getattr(rule, "name", None) or type(rule).__name__


class Scheduled(Policy):
    """The schedule's drops and picks, with ``rule.select`` deciding which samples a drop keeps.

    - rule: any object with ``select(subset, losses, k, generator)``, where ``subset`` is the
      sorted LongTensor of current members, ``losses`` the float32 losses of all N samples
      recorded this epoch (+inf for a member with no loss this epoch, -inf for one whose
      loss was not finite), ``k`` how many to keep, and ``generator`` a ``torch.Generator``
      seeded by (seed, epoch). ``losses`` holds the engine's score (``DropAndPick(score=...)``, higher =
      harder; the loss by default). It returns ``k`` distinct members of ``subset``, in any order.
      Optional: ``state_dict``/``load_state_dict`` for a rule with state of its own;
      ``observe(losses)``, called with those losses after every epoch (the last excepted, where
      nothing is decided) before any drop, for a rule that learns from every epoch
      (``KeepHardestAverage``); ``params()``, the settings a saved state must match.
    """

    def __init__(self, rule):
        if not callable(getattr(rule, "select", None)):
            raise ValueError(f"a selection rule needs a select(subset, losses, k, generator) method; "
                             f"{type(rule).__name__} has none")
        self.rule = rule
        self.name = rule_name(rule)

    def plan(self, schedule: DaPSchedule, num_samples: int) -> Plan:
        return schedule.plan(num_samples)

    def end_epoch(self, end: EpochEnd) -> Optional[Change]:
        if hasattr(self.rule, "observe"):
            self.rule.observe(end.losses)
        if end.scheduled == PICK:
            return Change(torch.ones(end.num_samples, dtype=torch.bool), PICK)
        if end.scheduled != DROP:
            return None
        k = end.schedule.kept_at_drop(end.subset.numel(), end.num_samples)
        if k == end.subset.numel():
            return None
        if end.recorded == 0:
            raise RuntimeError(f"epoch {end.epoch} is a drop epoch but no loss was recorded for the subset: "
                               "call dap.record(indices, per_sample_losses) for every training batch.")
        chosen = self.rule.select(end.subset, end.losses, k, generator(end.seed, end.epoch, "select"))
        return Change(checked_selection(chosen, end, k, self.name), DROP)

    def params(self) -> dict:
        return self.rule.params() if hasattr(self.rule, "params") else {}

    def state_dict(self) -> dict:
        return self.rule.state_dict() if hasattr(self.rule, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if hasattr(self.rule, "load_state_dict"):
            self.rule.load_state_dict(state)
