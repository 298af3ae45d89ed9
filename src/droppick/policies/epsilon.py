"""Epsilon-greedy selection (Raju et al. 2021, "Accelerating deep learning with dynamic data pruning")."""

from __future__ import annotations

from fractions import Fraction

import torch

from ..selection import select_epsilon_greedy

EPSILON = 0.1  # droppick's default, not the paper's: tune it on a validation split (--val-samples)


def random_count(k: int, epsilon: float) -> int:
    """floor(epsilon * k), exactly from the decimal written (as ``schedule.keep_count``): the
    rounding goes to the hardest, so a tiny epsilon leaves the paper's rule unchanged."""
    exact = Fraction(repr(float(epsilon)))
    return (k * exact.numerator) // exact.denominator


class EpsilonGreedy:
    """At each drop keep the ``k - floor(epsilon * k)`` members with the highest loss this epoch
    (``KeepHardest``'s rule, ties to the lower index, an unrecorded member counts as hardest),
    plus ``floor(epsilon * k)`` drawn uniformly without replacement from the rest of the subset
    with the drop's seeded generator (``seeding.generator(seed, epoch, "select")``: every rank
    draws the same). epsilon = 0 is ``"dap"``, epsilon = 1 is ``"random"`` (but not the same
    draws). The name ``"epsilon"`` uses ``EPSILON``.
    """

    name = "epsilon"

    def __init__(self, epsilon: float = EPSILON):
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be a number in [0, 1] (the share of a drop's kept samples drawn at "
                             f"random), got {epsilon!r}")
        self.epsilon = float(epsilon)

    def select(self, subset: torch.Tensor, losses: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        return select_epsilon_greedy(subset, losses, k, random_count(k, self.epsilon), generator)

    def params(self) -> dict:
        return {"epsilon": self.epsilon}
