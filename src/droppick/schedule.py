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

The budget rule's schedule (``DaPSchedule.for_budget``, ``--target-compute C``): p solved so the plan
spends C, ``rule_warmup`` and ``rule_floor`` (its drops: budget.py). Its constants are fitted to the
validation winners at every budget tried: the page ``EVIDENCE`` (experiments/frontier_budgets.py)
shows the fit, a test holds them to the committed runs.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Sequence

from .plan import DROP, PICK, Plan

WARMUP_SHARE = 0.5  # the rule's warm-up / the one given: what most budgets' winners used (module docstring)
MIN_FLOOR = 0.192  # no floor where the largest floor is below this (module docstring)
FLOOR_SHARE = 0.956  # the floor f(C) / largest_floor(C): the mean over the winners with a floor (module docstring)
EVIDENCE = "experiments/fashion-mnist/frontier/budgets/README.md"  # the page that shows the fit and the runs
TOLERANCE = 0.005  # the budget rule plans within this of the compute asked for
_NOTHING = 1e-9  # a keep so small that every drop falls to its floor (keep_count never goes below 1)


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
    def for_budget(cls, compute: float, num_samples: int, epochs: int, warmup: int, interval: int,
                   reuse_at: Sequence[int] = (), active: Optional[int] = None,
                   fixed_warmup: bool = False) -> "DaPSchedule":
        """The schedule of the best rule droppick has evidence for at ``compute`` (a fraction of training
        on all data): a floor where the budget allows one, p solved for ``num_samples``, planned within
        0.005 of it. Its drops (epsilon-greedy where it has no floor): ``droppick.budget_rule``."""
        return for_budget(compute, num_samples, epochs, warmup, interval, reuse_at, active, fixed_warmup)

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


def check_budget(compute: float) -> None:
    if not 0.0 < compute <= 1.0:
        raise ValueError(f"target compute must lie in (0, 1] (a fraction of training on all data for every epoch), "
                         f"got {compute}")


def smallest_compute(schedule: DaPSchedule, num_samples: int) -> float:
    """The least compute the schedule allows: every drop keeps one sample, no floor; what is left is
    its epochs on all data (the warm-up, the epoch that records the first drop's losses, each pick's)."""
    return dataclasses.replace(schedule, keep=_NOTHING, min_keep=0.0).plan(num_samples).compute_fraction


def largest_floor(schedule: DaPSchedule, num_samples: int, compute: float) -> float:
    """The largest floor f (0.001 grid) whose plan spends at most ``compute`` when every drop falls
    straight to the floor (0 where none does). Compute rises with f, so bisect."""
    def spends(f: float) -> float:
        return dataclasses.replace(schedule, keep=_NOTHING, min_keep=f).plan(num_samples).compute_fraction

    low, high = 0, 1000  # in thousandths
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if spends(mid / 1000) <= compute else (low, mid - 1)
    return low / 1000


def rule_warmup(schedule: DaPSchedule, num_samples: int, compute: float) -> int:
    """The budget rule's warm-up: ``WARMUP_SHARE`` x ``schedule.warmup`` rounded down, or the longest
    shorter one whose smallest compute is within ``compute``; 0 if none is. A short warm-up leaves
    budget for the drops: at 25% on Fashion-MNIST W = 2 beat W = 4 by 8.6 points on validation."""
    for warmup in range(int(WARMUP_SHARE * schedule.warmup), 0, -1):
        if smallest_compute(dataclasses.replace(schedule, warmup=warmup), num_samples) <= compute:
            return warmup
    return 0


def rule_floor(schedule: DaPSchedule, num_samples: int, compute: float) -> float:
    """The budget rule's floor at the schedule's warm-up: ``FLOOR_SHARE`` x the largest floor (0.001
    grid, rounded down; a share, so the rule follows the user's picks and N), or none where the
    largest floor is under ``MIN_FLOOR``: a small floor starves the epochs after the drop."""
    largest = largest_floor(schedule, num_samples, compute)
    return int(FLOOR_SHARE * largest * 1000) / 1000 if largest >= MIN_FLOOR else 0.0


def for_budget(compute: float, num_samples: int, epochs: int, warmup: int, interval: int,
               reuse_at: Sequence[int] = (), active: Optional[int] = None, fixed_warmup: bool = False) -> DaPSchedule:
    """The budget rule's schedule for C = ``compute`` (module docstring), planned within ``TOLERANCE``;
    C = 1 is all data. Refused, each with the fix: C outside (0, 1]; C below the smallest compute the
    schedule allows (at warm-up 0 unless ``fixed_warmup``); a C no p lands within the tolerance (tiny N)."""
    check_budget(compute)
    base = DaPSchedule(epochs=epochs, warmup=warmup, interval=interval, keep=1.0, active=active, reuse_at=reuse_at)
    if compute == 1.0:
        return base
    least = smallest_compute(base if fixed_warmup else dataclasses.replace(base, warmup=0), num_samples)
    if compute < least:
        raise ValueError(f"target compute {compute} is below the smallest this schedule allows, {least:.4f} (its "
                         f"epochs on all data: {base.warmup if fixed_warmup else 0} of warm-up, the first epoch that "
                         f"records losses, each pick's epoch): ask for at least {least:.4f}, or "
                         f"{'shorten the warm-up or ' if fixed_warmup else ''}remove a pick (reuse_at)")
    if not fixed_warmup:
        base = dataclasses.replace(base, warmup=rule_warmup(base, num_samples, compute))
    schedule = closest_keep(dataclasses.replace(base, min_keep=rule_floor(base, num_samples, compute)),
                            num_samples, compute)
    planned = schedule.plan(num_samples).compute_fraction
    if abs(planned - compute) > TOLERANCE:
        raise ValueError(f"no keep p lands {num_samples} samples within {TOLERANCE} of compute {compute} (closest: "
                         f"{planned:.4f} at p {schedule.keep}): ask for {planned:.3f}, or train on more samples")
    return schedule


def closest_keep(schedule: DaPSchedule, num_samples: int, compute: float) -> DaPSchedule:
    """The schedule with the p (0.001 grid, to 0.001: a high floor can want a small p) whose plan lands
    closest to ``compute``, ties to the larger as ``solve``. Compute rises with p: bisect (10 plans)."""
    def at(thousandths: int) -> DaPSchedule:
        return dataclasses.replace(schedule, keep=thousandths / 1000)

    low, high = 1, 1000
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if at(mid).plan(num_samples).compute_fraction < compute else (low, mid)
    above, below = at(low), at(max(1, low - 1))
    gap = [abs(s.plan(num_samples).compute_fraction - compute) for s in (above, below)]
    return below if gap[1] < gap[0] else above
