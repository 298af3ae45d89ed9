"""Pure selection rules: given the current subset, decide which samples to keep.

These functions hold no state and never touch a global RNG; ``engine.DropAndPick`` calls
them at a drop point.
"""

from __future__ import annotations

import torch


def select_hardest(subset: torch.Tensor, losses: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` members of ``subset`` with the highest loss, as a sorted LongTensor.

    subset: sorted LongTensor of sample indices (the current training subset).
    losses: float tensor of length N indexed by sample id; only ``losses[subset]`` is read.
    Ties are broken by sample index: among equal losses the lower index is kept, so the
    result does not depend on sort stability or on the order samples were seen in.

    Runs in O(n): one k-th order statistic and two masks instead of a full sort.
    """
    n = subset.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n} (the subset size), got {k}")
    if k == n:
        return subset.clone()
    values = losses[subset]
    # The k-th largest value is the (n - k + 1)-th smallest.
    threshold = torch.kthvalue(values, n - k + 1).values
    above = values > threshold
    at = values == threshold
    # Fill the remaining places with the lowest-index samples at the threshold: ``subset`` is
    # sorted, so the first ones in mask order are the lowest indices.
    missing = k - int(above.sum())
    at_positions = at.nonzero().squeeze(1)[:missing]
    keep = above
    keep[at_positions] = True
    return subset[keep]


def select_random(subset: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` members of ``subset`` chosen uniformly without replacement, sorted."""
    n = subset.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n} (the subset size), got {k}")
    chosen = torch.randperm(n, generator=generator)[:k]
    return subset[chosen.sort().values]
