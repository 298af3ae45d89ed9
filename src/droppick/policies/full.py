"""The all-data baselines: ``Full`` (every epoch, every sample) and ``Scaled`` (Table 2f's
"All data 63% epochs": every sample, for fewer epochs)."""

from __future__ import annotations

from typing import Optional

from ..plan import Plan
from ..schedule import DaPSchedule
from .base import Policy


def scaled_epochs(epochs: int, compute: float) -> int:
    """The epochs of an all-data run that costs ``compute`` of ``epochs`` (at least 1)."""
    return max(1, round(epochs * compute))


def dap_compute(schedule: DaPSchedule, num_samples: int) -> float:
    """The matched-compute baselines' default target: this schedule's planned DaP compute."""
    return schedule.plan(num_samples).compute_fraction


def matched_size(target_compute: Optional[float], schedule: DaPSchedule, num_samples: int) -> int:
    """Samples per epoch of a run that trains the same number each epoch and costs
    ``target_compute`` (default: the DaP plan's): round(compute * N), at least one."""
    return max(1, round((target_compute or dap_compute(schedule, num_samples)) * num_samples))


def check_target(target_compute: Optional[float]) -> Optional[float]:
    if target_compute is not None and not 0.0 < target_compute <= 1.0:
        raise ValueError(f"target_compute must lie in (0, 1], got {target_compute}")
    return None if target_compute is None else float(target_compute)


class Full(Policy):
    """All data every epoch (the 100% row of every table). Picks have nothing to bring back."""

    name = "full"


class Scaled(Policy):
    """All data for ``round(E * target_compute)`` epochs, compute still measured against E * N.

    - target_compute: default, the schedule's planned DaP compute. The trainer scales the learning
      rate's milestones to the shorter run (``TrainConfig.scaled``); the engine ends after it.
    """

    name = "scaled"

    def __init__(self, target_compute: Optional[float] = None):
        self.target_compute = check_target(target_compute)

    def plan(self, schedule: DaPSchedule, num_samples: int) -> Plan:
        target = self.target_compute or dap_compute(schedule, num_samples)
        epochs = scaled_epochs(schedule.epochs, target)
        return Plan(num_samples, (num_samples,) * epochs, (None,) * epochs, reference_epochs=schedule.epochs)

    def params(self) -> dict:
        return {"target_compute": self.target_compute}
