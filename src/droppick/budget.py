"""The budget solver: the DaP hyper-parameter that lands a schedule closest to a target compute
(``--target-compute C --solve X``), and the line that explains the budget rule's choice (the rule
itself, ``DaPSchedule.for_budget``, is in schedule.py: the class method needs it there).

Pure and cheap: it only runs the planner over a grid of candidate values.
"""

from __future__ import annotations

import dataclasses

from .schedule import EVIDENCE, FLOOR_SHARE, MIN_FLOOR, WARMUP_SHARE, DaPSchedule, check_budget, largest_floor

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


def describe_budget(schedule: DaPSchedule, num_samples: int, compute: float, warmup: int) -> str:
    """One line: what the budget rule chose for C and why, pointing to the evidence. ``warmup``: the
    warm-up asked for (the rule may have shortened it)."""
    if schedule.keep == 1.0:
        return f"budget {compute}: all data every epoch (compute 1 leaves nothing to drop)"
    planned = schedule.plan(num_samples).compute_fraction
    largest = largest_floor(dataclasses.replace(schedule, min_keep=0.0), num_samples, compute)
    shortened = (f"warm-up {schedule.warmup} instead of {warmup} ({WARMUP_SHARE} x yours, or less where the "
                 f"budget needs it; give --warmup to keep yours), " if schedule.warmup != warmup else "")
    floor = (f"min_keep {schedule.min_keep} ({FLOOR_SHARE} x {largest}, the largest floor this schedule allows "
             f"at this budget)" if schedule.min_keep else
             f"no floor (the largest this schedule allows at this budget, {largest}, is under {MIN_FLOOR})")
    return (f"budget {compute}: DaP, {shortened}{floor} and keep {schedule.keep} solved for N = {num_samples} "
            f"(planned compute {planned:.4f}); why this rule: {EVIDENCE}")
