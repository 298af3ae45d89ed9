"""The budget solver: the DaP hyper-parameter that lands a schedule closest to a target compute
(``--target-compute C --solve X``); the budget rule's drops and the line that explains its choice
(its schedule, ``DaPSchedule.for_budget``, is in schedule.py: the class method needs it there).

The rule's drops: where its schedule has a floor, DaP's (keep the hardest); where the budget leaves
no floor, epsilon-greedy (policies/epsilon.py) with ``RANDOM_SHARE`` of each drop's keep drawn at
random. There the subset gets small, and at 25% compute on Fashion-MNIST the validation winner was
epsilon-greedy (eps 0.9 at W = 2 scored 85.52, eps 0.8 85.26, DaP's best form 83.81, rs2 84.83, seed
0): the hardest few alone starve the epochs after the drop of easy, typical samples. At 35%, where
the floor wins, eps 0.5 and 0.8 lost to it by 2.1 and 1.7. Measured with the rule's W = 2 only: with
a warm-up kept long (``fixed_warmup``), the no-floor budgets reach higher (35% at W = 4) and epsilon
there is unmeasured. The page ``EVIDENCE`` shows the fit.

Pure and cheap: it only runs the planner over a grid of candidate values.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

from .schedule import (EVIDENCE, FLOOR_SHARE, MIN_FLOOR, WARMUP_SHARE, DaPSchedule, check_budget, for_budget,
                       largest_floor)

RANDOM_SHARE = 0.9  # epsilon of the rule's drops where it has no floor: the validation winners' (module docstring)

SOLVABLE = ("keep", "interval", "warmup", "active", "min_keep")


def candidates(schedule: DaPSchedule, param: str) -> list:
    if param == "keep":
        return [round(0.3 + 0.001 * i, 3) for i in range(701)]  # 0.300 .. 1.000
    if param in ("interval", "active"):
        return list(range(1, schedule.epochs + 1))
    if param == "min_keep":
        return [round(0.001 * i, 3) for i in range(1001)]  # 0.000 .. 1.000
    if param == "warmup":
        return list(range(0, schedule.epochs))
    raise ValueError(f"--solve must be one of {', '.join(SOLVABLE)}; got {param!r}")


def solve(schedule: DaPSchedule, num_samples: int, target: float, param: str) -> tuple[DaPSchedule, float]:
    """The schedule with ``param`` changed so its planned compute is closest to ``target``.

    The other hyper-parameters stay as given, a floor (``min_keep``) included: solving ``keep``
    under a floor finds the p that spends the budget with that floor in place.
    Ties go to the larger compute (the cautious side: more data, never less than asked for when
    two values are equally close). Returns the schedule and its compute fraction.
    """
    check_budget(target)
    best = None
    for value in candidates(schedule, param):
        candidate = dataclasses.replace(schedule, **{param: value})
        compute = candidate.plan(num_samples).compute_fraction
        key = (abs(compute - target), -compute)
        if best is None or key < best[0]:
            best = (key, candidate, compute)
    return best[1], best[2]


class BudgetRule(NamedTuple):
    """What the budget rule chose: its schedule and its drops. ``DropAndPick(num_samples=N,
    **rule.engine_args, seed=...)`` builds its engine."""
    schedule: DaPSchedule
    policy: str  # "dap" or "epsilon"
    epsilon: Optional[float]  # the random share of policy "epsilon"; None for "dap"

    @property
    def policy_args(self) -> dict:
        """The drops as ``DropAndPick`` and ``TrainConfig`` name them."""
        return {"policy": self.policy} | ({"epsilon": self.epsilon} if self.epsilon is not None else {})

    @property
    def engine_args(self) -> dict:
        return {"schedule": self.schedule} | self.policy_args


def rule_policy(schedule: DaPSchedule) -> tuple[str, Optional[float]]:
    """The budget rule's drops on its schedule (module docstring): epsilon-greedy with ``RANDOM_SHARE``
    where it drops without a floor, DaP's where it has one (or drops nothing)."""
    return ("epsilon", RANDOM_SHARE) if schedule.keep < 1.0 and not schedule.min_keep else ("dap", None)


def budget_rule(compute: float, num_samples: int, epochs: int, warmup: int, interval: int,
                reuse_at: Sequence[int] = (), active: Optional[int] = None, fixed_warmup: bool = False) -> BudgetRule:
    """The best rule droppick has evidence for at ``compute``: ``DaPSchedule.for_budget``'s schedule
    (same arguments, same refusals) and ``rule_policy``'s drops."""
    schedule = for_budget(compute, num_samples, epochs, warmup, interval, reuse_at, active, fixed_warmup)
    return BudgetRule(schedule, *rule_policy(schedule))


def describe_budget(schedule: DaPSchedule, num_samples: int, compute: float, warmup: int,
                    yours: Optional[str] = None) -> str:
    """One line: what the budget rule chose for C and why, pointing to the evidence. ``warmup``: the
    warm-up asked for (the rule may have shortened it); ``yours``: the drops the user chose instead of
    the rule's, as the line names them ("policy dap"; None: the rule's)."""
    if schedule.keep == 1.0:
        return f"budget {compute}: all data every epoch (compute 1 leaves nothing to drop)"
    planned = schedule.plan(num_samples).compute_fraction
    largest = largest_floor(dataclasses.replace(schedule, min_keep=0.0), num_samples, compute)
    shortened = (f"warm-up {schedule.warmup} instead of {warmup} ({WARMUP_SHARE} x yours, or less where the "
                 f"budget needs it; give --warmup to keep yours), " if schedule.warmup != warmup else "")
    floor = (f"min_keep {schedule.min_keep} ({FLOOR_SHARE} x {largest}, the largest floor this schedule allows "
             f"at this budget)" if schedule.min_keep else
             f"no floor (the largest this schedule allows at this budget, {largest}, is under {MIN_FLOOR})")
    rule, epsilon = rule_policy(schedule)
    drops = (f"epsilon-greedy drops (epsilon {epsilon}: that share of each drop's keep drawn at random, the rest "
             f"the hardest, where the rule has no floor), " if rule == "epsilon" else "DaP, ")
    if yours is not None:
        drops = f"{yours} (yours; the rule's drops here: {drops.rstrip(', ')}), "
    return (f"budget {compute}: {drops}{shortened}{floor} and keep {schedule.keep} solved for N = {num_samples} "
            f"(planned compute {planned:.4f}); why this rule: {EVIDENCE}")
