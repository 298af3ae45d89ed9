"""Pure selection rules: given losses and a subset, which samples to keep.

No state and no global RNG: the policies in ``policies/`` call these with their own
generators. Losses are the engine's float32 CPU vector, so the full-length passes run on
numpy views of it (on this CPU numpy's partition is ~8x faster than ``torch.kthvalue`` and its
boolean compaction ~4x faster than torch's; ``bench/selection.py`` times them at 14M samples).
"""

from __future__ import annotations

import numpy as np
import torch


def select_hardest(subset: torch.Tensor, losses: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` members of ``subset`` with the highest loss, as a sorted LongTensor.

    subset: sorted LongTensor of sample indices; losses: float tensor of length N indexed by
    sample id (only ``losses[subset]`` is read). Among equal losses the lower index is kept, so
    the result depends on neither sort stability nor the order samples were seen in. O(n): one
    k-th order statistic and two comparisons, no full sort.
    """
    return select_epsilon_greedy(subset, losses, k, 0, None)


def select_epsilon_greedy(subset: torch.Tensor, losses: torch.Tensor, k: int, n_random: int,
                          generator) -> torch.Tensor:
    """``k - n_random`` members of ``subset`` with the highest loss (``select_hardest``'s rule, ties
    included) plus ``n_random`` drawn uniformly without replacement from the other members, with
    ``generator``; a sorted LongTensor. ``n_random = 0`` is ``select_hardest`` (no draw)."""
    n = subset.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n} (the subset size), got {k}")
    if not 0 <= n_random <= k:
        raise ValueError(f"n_random must lie in 0..k ({k}), got {n_random}")
    # All data (the first drop after a pick, the largest one) needs no gather and no compaction.
    everything = n == losses.numel()
    values = (losses if everything else losses.index_select(0, subset)).detach().cpu().numpy()
    keep = extreme_mask(values, k - n_random, largest=True)
    if n_random:
        rest = np.flatnonzero(~keep)
        keep[rest[torch.randperm(rest.size, generator=generator)[:n_random].numpy()]] = True
    kept = np.flatnonzero(keep) if everything else subset.numpy()[keep]
    return torch.from_numpy(kept.astype(np.int64, copy=False))


def extreme_mask(values: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """A bool mask of the ``k`` largest (or smallest) ``values``; ties at the threshold go to the
    lowest positions. O(n): one k-th order statistic (on a copy) and two comparisons."""
    n = values.size
    if k == 0:
        return np.zeros(n, dtype=bool)
    at = n - k if largest else k - 1
    threshold = np.partition(values, at)[at]  # the k-th largest / smallest
    keep = values > threshold if largest else values < threshold
    missing = k - int(np.count_nonzero(keep))
    if missing:  # ties at the threshold: the lowest positions, i.e. the lowest sample indices
        keep[np.flatnonzero(values == threshold)[:missing]] = True
    return keep


def update_average(average: torch.Tensor, losses: torch.Tensor, beta: float) -> None:
    """One epoch of an exponential moving average of per-sample losses, in place.

    average: float32[N], +inf for a sample never observed (it ranks hardest, as an unrecorded
    loss does); losses: the engine's float32[N] of this epoch (+inf: not trained this epoch,
    -inf: non-finite). A finite loss l updates its sample's average to ``beta * average +
    (1 - beta) * l``, or to ``l`` at the sample's first observation (starting from 0 would rank
    new samples as easy). A non-finite loss sets the average to -inf: such a sample leaves the
    subset for good, and ranking it last keeps it from taking a kept place at this drop. A sample
    not trained keeps its average: not being trained says nothing about how hard it is. Whole
    numpy passes, no index lists; the ranking needs no copy of the average.
    """
    a, values = average.numpy(), losses.detach().cpu().numpy()
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where masked out below
        updated = a * np.float32(beta)
        updated += np.float32(1.0 - beta) * values
    np.copyto(updated, values, where=np.isposinf(a))  # first observation
    np.copyto(a, updated, where=values != np.inf)  # trained this epoch (finite or non-finite)


def mask_indices(mask: torch.Tensor) -> torch.Tensor:
    """The positions of the True entries of a 1-D bool mask, sorted (``mask.nonzero()``, faster on CPU)."""
    return torch.from_numpy(np.flatnonzero(mask.cpu().numpy()).astype(np.int64, copy=False))


def stratified_choice(labels: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``k`` samples drawn at random within each class, keeping class shares.

    Class ``c`` gets ``floor(k * share_c)`` samples; the remaining places go one each to the
    classes with the largest fractional parts (ties to the lower class id). Integer arithmetic
    keeps the quotas exact, so they do not depend on the platform's floating point.
    """
    total = labels.numel()
    if not 1 <= k <= total:
        raise ValueError(f"k must lie in 1..{total}, got {k}")
    classes, counts = labels.unique(sorted=True, return_counts=True)
    numerators = k * counts
    quotas = numerators // total
    fractions = (numerators % total).tolist()
    order = sorted(range(len(classes)), key=lambda c: (-fractions[c], c))
    for c in order[: k - int(quotas.sum())]:
        quotas[c] += 1
    picked = []
    for cls, quota in zip(classes.tolist(), quotas.tolist()):
        members = (labels == cls).nonzero().flatten().cpu()
        picked.append(members[torch.randperm(len(members), generator=generator)[:quota]])
    return torch.cat(picked).sort().values


def well_learned(scores: torch.Tensor) -> torch.Tensor:
    """InfoBatch's "well-learned" samples: scored (not NaN) and below the mean score."""
    scored = ~torch.isnan(scores)
    if not bool(scored.any()):
        return scored
    return scored & (scores < scores[scored].mean())  # NaN compares False: never well learned


def select_infobatch(scores: torch.Tensor, generator: torch.Generator,
                     ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoBatch's soft pruning (Qin et al., ICLR 2024) for the next epoch.

    scores: each sample's latest loss, NaN for a sample never scored. Scored samples below the
    mean score are "well learned": each is pruned with probability ``ratio``. Returns the kept
    sample indices (sorted) and a per-sample loss weight of length N: 1/(1 - ratio) for the kept
    well-learned samples, so the expected gradient is unchanged, and 1 elsewhere.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"InfoBatch ratio must lie in [0, 1), got {ratio}")
    n = scores.numel()
    weights = torch.ones(n, dtype=torch.float32)
    candidates = well_learned(scores)
    pruned = candidates & (torch.rand(n, generator=generator) < ratio)
    weights[candidates & ~pruned] = 1.0 / (1.0 - ratio)
    return mask_indices(~pruned), weights


def ratio_for_budget(budget_left: float, prunable_epochs: int, full_epochs: int, n: int, well_learned: int,
                     cap: float) -> float:
    """The InfoBatch prune ratio that spends ``budget_left`` samples evenly: the next epoch's
    expected size n - r * well_learned equals what is left after ``full_epochs`` all-data epochs,
    shared over the ``prunable_epochs`` still to come, r clipped to [0, cap]."""
    if well_learned == 0 or prunable_epochs <= 0:
        return 0.0
    size = (budget_left - full_epochs * n) / prunable_epochs
    return min(cap, max(0.0, (n - size) / well_learned))
