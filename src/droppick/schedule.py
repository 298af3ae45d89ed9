"""The Drop-and-Pick schedule: when to drop, when to pick, and what that costs.

Everything here is pure: a schedule is a frozen set of the paper's hyper-parameters
(Table 1) and the planner derives every epoch's subset size from them, without training.

Epochs are numbered 1..E as in Algorithm 1. A decision taken after epoch tau (a drop or a
pick) applies from epoch tau + 1 on.

Reading of Algorithm 1 that we implement
-----------------------------------------
Algorithm 1 as printed keeps two counters, T_start (the epoch the current cycle began) and
T_previous (the last drop), and at a pick epoch only resets T_start. Taken literally, that
cannot reproduce Tables 2 and 3: with alpha = 20 (Table 2d) T_previous stops at epoch 50,
``tau - T_previous == I`` is never true again after the pick at 150, and the run costs 96.7%
instead of the printed 92%; interval 20 on CIFAR-100 would cost 77.2% instead of 79%.

The reading that reproduces every computation figure of Table 2 (a)-(e), Table 3 and the
ImageNet setting of Section 4.3.1 is: **a pick restarts the interval counter too**
(T_previous <- tau at a pick), so every cycle drops I, 2I, ... epochs after it began, exactly
like the first cycle after warm-up. That is also what Section 3.3 describes ("restart the
process of reducing training data"). ``tests/test_schedule.py`` checks each row.

Corner cases the paper leaves open:

- A pick and a drop due after the same epoch: the pick wins (the drop would be undone at once).
- A pick inside the warm-up: the cycle and interval counters restart at max(tau, W), so the
  first drop still comes I epochs after the warm-up ends, as without the pick.
- Nothing is decided after the last epoch: no epoch would train on the result.
- A plan names only what changes the subset: a drop that keeps every sample (p = 1) and a pick
  with nothing to pick up (no drop since the last pick) are no events.

Beyond the paper: a floor on the subset (``min_keep = f``). A drop keeps
``max(keep_count(n, p), min(n, ceil(f * N)))`` samples, so it never leaves fewer than f x N
(rounded up: "never fewer than f x N" has to hold for a fractional f x N too) and never adds
samples back. f = 0, the default, is the paper's schedule. A drop that the floor stops entirely
(the subset is already at the floor) changes nothing, so it is no event, like p = 1.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

DROP = "drop"
PICK = "pick"


def require_int(name: str, value, minimum: int) -> int:
    """``value`` as an int, or a ValueError naming ``name``: the one integer check of the package."""
    # bool is an int subclass; True epochs is always a bug in the caller.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def keep_count(n: int, keep: float) -> int:
    """k = max(1, floor(n * keep)), computed exactly.

    ``keep`` is taken as the decimal the user wrote (``Fraction(repr(keep))``), so
    0.9 of 50,000 keeps exactly 45,000 although 0.9 is not representable in binary.
    """
    if n <= 0:
        raise ValueError(f"cannot keep a fraction of an empty subset (n={n})")
    exact = Fraction(repr(float(keep)))
    return max(1, (n * exact.numerator) // exact.denominator)


def floor_count(num_samples: int, min_keep: float) -> int:
    """ceil(num_samples * min_keep), computed exactly from the decimal written (as ``keep_count``)."""
    exact = Fraction(repr(float(min_keep)))
    return -((-num_samples * exact.numerator) // exact.denominator)


@dataclass(frozen=True)
class Plan:
    """What a schedule does to N samples, epoch by epoch (index 0 is epoch 1)."""

    num_samples: int
    subset_sizes: tuple[int, ...]  # samples trained on in each epoch
    events: tuple[Optional[str], ...]  # decision taken after each epoch: "drop", "pick", "prune", "resample" or None
    reference_epochs: Optional[int] = None  # epochs of the all-data run compute is measured against;
    # None: as many as this plan's (only "scaled" trains fewer epochs than the run it is compared with)

    @property
    def epochs(self) -> int:
        return len(self.subset_sizes)

    @property
    def drop_epochs(self) -> list[int]:
        return [e for e, ev in enumerate(self.events, start=1) if ev == DROP]

    @property
    def pick_epochs(self) -> list[int]:
        return [e for e, ev in enumerate(self.events, start=1) if ev == PICK]

    @property
    def total_samples(self) -> int:
        return sum(self.subset_sizes)

    @property
    def full_samples(self) -> int:
        """Samples the all-data run trains on: E * N."""
        return (self.reference_epochs or self.epochs) * self.num_samples

    @property
    def compute_fraction(self) -> float:
        """Samples trained on over E * N: the paper's "computation" (Section 4.1)."""
        return self.total_samples / self.full_samples

    def to_dict(self) -> dict:
        return {
            "num_samples": self.num_samples,
            "epochs": self.epochs,
            "compute_fraction": self.compute_fraction,
            "total_samples": self.total_samples,
            "subset_sizes": list(self.subset_sizes),
            "drop_epochs": self.drop_epochs,
            "pick_epochs": self.pick_epochs,
        }


@dataclass(frozen=True)
class DaPSchedule:
    """The paper's hyper-parameters (Table 1), validated at construction.

    - epochs:   E, total training epochs.
    - warmup:   W, epochs on all data before the first drop (0 <= W < E).
    - interval: I, epochs between two drops within a cycle.
    - keep:     p, fraction of the *current* subset kept at each drop, in (0, 1].
    - active:   alpha, a cycle only drops while ``tau - cycle_start < alpha``; None = infinity.
    - reuse_at: R, epochs after which all data is picked back up (the LR decay epochs).
    - min_keep: f, beyond the paper: a drop never leaves fewer than ceil(f * N) samples, in [0, 1];
      0 (the default) is no floor (module docstring).
    """

    epochs: int
    warmup: int
    interval: int
    keep: float
    active: Optional[int] = None
    reuse_at: Sequence[int] = field(default_factory=tuple)
    min_keep: float = 0.0

    def __post_init__(self):
        epochs = require_int("epochs", self.epochs, 1)
        warmup = require_int("warmup", self.warmup, 0)
        if warmup >= epochs:
            raise ValueError(f"warmup must be < epochs ({epochs}), got {warmup}: no epoch would be left to drop in")
        require_int("interval", self.interval, 1)
        if isinstance(self.keep, bool) or not isinstance(self.keep, numbers.Real) or not math.isfinite(self.keep):
            raise ValueError(f"keep must be a number in (0, 1], got {self.keep!r}")
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1] (the fraction of the subset kept at a drop), got {self.keep}")
        if (isinstance(self.min_keep, bool) or not isinstance(self.min_keep, numbers.Real)
                or not 0.0 <= self.min_keep <= 1.0):  # NaN fails the comparison too
            raise ValueError(f"min_keep must be a number in [0, 1] (the smallest subset a drop may leave, as a "
                             f"fraction of all N samples; 0 = no floor), got {self.min_keep!r}")
        if self.active is not None:
            require_int("active", self.active, 1)
        reuse_at = tuple(self.reuse_at)
        for r in reuse_at:
            require_int("reuse_at entry", r, 1)
            if r > epochs:
                raise ValueError(f"reuse_at entries must lie in 1..epochs ({epochs}), got {r}")
        if list(reuse_at) != sorted(set(reuse_at)):
            raise ValueError(f"reuse_at must be strictly increasing without duplicates, got {list(reuse_at)}")
        # Normalise so equal schedules compare (and serialise) equal.
        object.__setattr__(self, "epochs", epochs)
        object.__setattr__(self, "warmup", warmup)
        object.__setattr__(self, "interval", int(self.interval))
        object.__setattr__(self, "keep", float(self.keep))
        object.__setattr__(self, "active", None if self.active is None else int(self.active))
        object.__setattr__(self, "reuse_at", tuple(int(r) for r in reuse_at))
        object.__setattr__(self, "min_keep", float(self.min_keep))
        object.__setattr__(self, "_events", _events(self))

    def event_after(self, epoch: int) -> Optional[str]:
        """"drop", "pick" or None: the decision taken at the end of ``epoch`` (1-based)."""
        if not 1 <= epoch <= self.epochs:
            raise ValueError(f"epoch must lie in 1..{self.epochs}, got {epoch}")
        return self._events[epoch - 1]

    def kept_at_drop(self, n: int, num_samples: int) -> int:
        """How many of a subset of ``n`` (out of ``num_samples``) a drop keeps: p of them, but not
        fewer than the floor ceil(min_keep * N), and never more than ``n``."""
        return max(keep_count(n, self.keep), min(n, floor_count(num_samples, self.min_keep)))

    def plan(self, num_samples: int) -> Plan:
        """Subset size of every epoch for ``num_samples`` samples, and the events that change it."""
        n_all = require_int("num_samples", num_samples, 1)
        sizes, events, n = [], [], n_all
        for event in self._events:
            sizes.append(n)
            after = n_all if event == PICK else self.kept_at_drop(n, n_all) if event == DROP else n
            events.append(event if after != n else None)
            n = after
        return Plan(n_all, tuple(sizes), tuple(events))

    def to_dict(self) -> dict:
        """The hyper-parameters; ``min_keep`` only when set, so a schedule without a floor serialises
        as it did before the floor existed (and the states saved then still load)."""
        out = {
            "epochs": self.epochs,
            "warmup": self.warmup,
            "interval": self.interval,
            "keep": self.keep,
            "active": self.active,
            "reuse_at": list(self.reuse_at),
        }
        if self.min_keep:
            out["min_keep"] = self.min_keep
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "DaPSchedule":
        return cls(**{k: d[k] for k in ("epochs", "warmup", "interval", "keep", "active", "reuse_at")},
                   min_keep=d.get("min_keep", 0.0))


def _events(s: DaPSchedule) -> tuple[Optional[str], ...]:
    """Algorithm 1's control flow with the pick resetting the interval counter (module docstring)."""
    active = math.inf if s.active is None else s.active
    reuse = set(s.reuse_at)
    cycle_start = last_drop = s.warmup  # T_start, T_previous
    events: list[Optional[str]] = []
    for tau in range(1, s.epochs + 1):
        if tau == s.epochs:  # no epoch follows the last one
            events.append(None)
        elif tau in reuse:
            events.append(PICK)
            cycle_start = last_drop = max(tau, s.warmup)
        elif tau > s.warmup and tau - last_drop == s.interval and tau - cycle_start < active:
            events.append(DROP)
            last_drop = tau
        else:
            events.append(None)
    return tuple(events)
