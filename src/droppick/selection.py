"""Pure selection rules: given the current subset, decide which samples to keep.

These functions hold no state and never touch a global RNG; ``engine.DropAndPick`` calls
them at a drop point.
"""

from __future__ import annotations

from typing import Optional

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


def select_static(num_samples: int, k: int, generator: torch.Generator,
                  labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A fixed random subset of ``k`` samples, stratified by class when ``labels`` are given.

    Each class gets its share rounded down, and the remaining places go to the classes with
    the largest remainders (ties to the lower class id), so class proportions are kept.
    """
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must lie in 1..{num_samples}, got {k}")
    if labels is None:
        return torch.randperm(num_samples, generator=generator)[:k].sort().values
    if labels.numel() != num_samples:
        raise ValueError(f"labels has {labels.numel()} entries for {num_samples} samples")
    counts = torch.bincount(labels)
    exact = counts.double() * k / num_samples
    quota = exact.floor().long()
    remainder = exact - quota
    order = sorted(range(len(counts)), key=lambda c: (-float(remainder[c]), c))
    for c in order[: k - int(quota.sum())]:
        quota[c] += 1
    chosen = []
    for c in range(len(counts)):
        members = (labels == c).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[: int(quota[c])]])
    return torch.cat(chosen).sort().values


def select_infobatch(losses: torch.Tensor, scored: torch.Tensor, ratio: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoBatch's soft pruning (Qin et al., ICLR 2024) for the next epoch.

    Among samples with a score (``scored``), those whose last loss is below the mean are
    "well learned": each is pruned with probability ``ratio``. Returns the kept sample indices
    (sorted) and a per-sample loss weight of length N: 1/(1 - ratio) for the kept well-learned
    samples, so the expected gradient is unchanged, and 1 elsewhere.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"InfoBatch ratio must lie in [0, 1), got {ratio}")
    n = losses.numel()
    weights = torch.ones(n, dtype=torch.float32)
    if not bool(scored.any()):
        return torch.arange(n), weights
    well_learned = scored & (losses < losses[scored].mean())
    pruned = well_learned & (torch.rand(n, generator=generator) < ratio)
    weights[well_learned & ~pruned] = 1.0 / (1.0 - ratio)
    return (~pruned).nonzero().squeeze(1), weights
