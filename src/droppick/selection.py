"""Pure selection rules: given the current subset, decide which samples to keep.

These functions hold no state and never touch a global RNG; ``engine.DropAndPick`` calls
them at a drop point.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
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
    # ``subset`` is sorted, so "lower position" in ``hardest_mask`` means "lower sample index".
    keep = hardest_mask(losses.index_select(0, subset), k)
    if subset.device.type == "cpu" and subset.dtype == torch.int64:
        return torch.from_numpy(subset.numpy()[keep.numpy()])  # 4x faster than torch's bool indexing here
    return subset[keep]


def hardest_mask(values: torch.Tensor, k: int, threshold: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Boolean mask of the ``k`` largest ``values``; among equal values the lower positions win.

    threshold: ``kth_largest(values, k)`` if the caller has it already.
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n}, got {k}")
    if threshold is None:
        threshold = kth_largest(values, k)
    a = _as_numpy(values)
    if a is None:  # not a CPU float32/float64 tensor: the same steps in torch
        keep = values >= threshold
        if int(torch.count_nonzero(keep)) == k:
            return keep
        keep = values > threshold
        keep[(values == threshold).nonzero().squeeze(1)[: k - int(torch.count_nonzero(keep))]] = True
        return keep
    t = a.dtype.type(threshold.item())  # exact: the threshold is one of the values
    keep = a >= t
    if np.count_nonzero(keep) == k:  # no surplus ties at the threshold
        return torch.from_numpy(keep)
    keep = a > t
    # Fill the remaining places with the lowest positions at the threshold.
    keep[np.flatnonzero(a == t)[: k - np.count_nonzero(keep)]] = True
    return torch.from_numpy(keep)


def hardest_in_subset(losses: torch.Tensor, seen: torch.Tensor, in_subset: torch.Tensor, k: int) -> Optional[torch.Tensor]:
    """DaP's drop on full-length state: a mask over all N samples of the ``k`` members of the
    subset (``in_subset``) with the highest loss, members not ``seen`` this epoch first.

    The same choice as ``select_hardest(subset, where(seen, losses, inf), k)`` (ties to the lower
    index), without gathering the subset's losses or scattering the kept ones back. Returns
    None when fewer than ``k`` members have a loss above -inf, where samples outside the subset
    (ranked at -inf here) could tie with members: use ``select_hardest`` then.
    """
    if losses.dtype != torch.float32 or losses.device.type != "cpu":
        key = torch.where(seen, losses, float("inf")).masked_fill_(~in_subset, float("-inf"))
    else:  # numpy's elementwise kernels are 3-5x faster than torch's on this path (1 thread)
        key_np = np.where(seen.numpy(), losses.numpy(), np.float32(np.inf))
        np.copyto(key_np, np.float32(-np.inf), where=~in_subset.numpy())
        key = torch.from_numpy(key_np)
    threshold = kth_largest(key, k)
    if threshold.item() == float("-inf"):
        return None
    return hardest_mask(key, k, threshold)


def mask_indices(mask: torch.Tensor) -> torch.Tensor:
    """The positions of the True entries of a 1-D bool mask, sorted (``mask.nonzero()``, faster on CPU)."""
    if mask.device.type != "cpu":
        return mask.nonzero().squeeze(1)
    return torch.from_numpy(np.flatnonzero(mask.numpy()).astype(np.int64, copy=False))


_SAMPLE = 1 << 16  # values sampled to bracket the k-th largest


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest of a 1-D tensor: exactly ``torch.kthvalue(values, n - k + 1).values``.

    For large ``n`` (a CPU float tensor) it first brackets the answer between two values of an
    evenly strided sample (no RNG: the order of ``values`` is arbitrary with respect to their
    size), counts the values below the bracket, and runs ``kthvalue`` only on the values
    inside it, a few percent of them. The counts prove that the answer lies inside; if it does
    not (a sample unlike the whole), it falls back to ``kthvalue`` on everything. That is a few
    vectorised comparisons over ``n`` instead of a quickselect over ``n``.
    """
    n = values.numel()
    rank = n - k + 1  # 1-based, ascending: the k-th largest is the (n - k + 1)-th smallest
    a = _as_numpy(values) if n >= 16 * _SAMPLE else None
    if a is None:
        return torch.kthvalue(values, rank).values
    sample = np.sort(a[:: n // _SAMPLE])  # NaN sorts last, as in kthvalue
    m = sample.size
    # The target's position in the sorted sample has a standard deviation of at most sqrt(m)/2.
    margin = 4 * int(m**0.5) + 16
    centre = (rank * m) // n
    lo = sample[max(centre - margin, 0)]
    hi = sample[min(centre + margin, m - 1)]
    inside = a < lo
    below = int(np.count_nonzero(inside))
    np.logical_not(inside, out=inside)
    inside &= a <= hi  # NaN is neither below lo nor inside: it ranks last, so the check still holds
    band = a[inside]
    if below < rank <= below + band.size:
        return torch.kthvalue(torch.from_numpy(band), rank - below).values
    return torch.kthvalue(values, rank).values


def _as_numpy(values: torch.Tensor) -> Optional[np.ndarray]:
    """A zero-copy numpy view of a CPU float32/float64 tensor, else None."""
    if values.device.type != "cpu" or values.dtype not in (torch.float32, torch.float64) or values.requires_grad:
        return None
    return values.numpy()


def select_random(subset: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` members of ``subset`` chosen uniformly without replacement, sorted."""
    n = subset.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in 1..{n} (the subset size), got {k}")
    chosen = torch.randperm(n, generator=generator)[:k]
    return subset[chosen.sort().values]


def select_static(num_samples: int, k: int, generator: torch.Generator,
                  labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A fixed random subset of ``k`` samples, stratified by class when ``labels`` are given."""
    if not 1 <= k <= num_samples:
        raise ValueError(f"k must lie in 1..{num_samples}, got {k}")
    if labels is None:
        return torch.randperm(num_samples, generator=generator)[:k].sort().values
    if labels.numel() != num_samples:
        raise ValueError(f"labels has {labels.numel()} entries for {num_samples} samples")
    return stratified_choice(labels, k, generator)


def stratified_choice(labels: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of ``k`` samples drawn at random within each class, keeping class shares.

    Class ``c`` gets ``floor(k * share_c)`` samples; the remaining places go one each to the
    classes with the largest fractional parts (ties to the lower class id). Integer arithmetic
    keeps the quotas exact, so they do not depend on the platform's floating point.
    """
    total = labels.numel()
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
