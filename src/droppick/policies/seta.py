"""SeTa (Zhou, Gao and Wang, CVPR 2025, "Scale Efficient Training for Large Datasets"), read from its
paper and public code (``mrazhou/SeTa``) and written here in droppick's terms.

Every epoch SeTa (1) keeps a uniformly random share ``1 - ratio`` of all samples, (2) sorts those into
``groups`` clusters of their latest losses (one-dimensional k-means, clusters ordered easy to hard),
and (3) trains on a window of ``round(groups x window)`` adjacent clusters that slides one cluster
harder each epoch and wraps back to the easiest: a curriculum that skips the easiest clusters, and,
except where the window holds the hardest, the hardest ones too. The first epoch trains every cluster.
Past ``delta x E`` epochs ("annealing") it keeps only step (1).

Readings we took where the code leaves room: the k-means is Lloyd's algorithm from evenly spaced
quantiles (SeTa's code calls scikit-learn's, seeded; one dimension has no need of it); a sample
never trained yet has no loss and counts as hardest (SeTa starts every score at 3.0, above most
losses); the random draws come from droppick's seeded generators, identical on every rank, where
SeTa's code reseeds numpy's global generator. With ``target_compute`` the ratio is recalibrated after
every epoch from the samples trained so far and the window's last share, like ``InfoBatch``'s, so
that the run spends that compute (SeTa's paper sets the ratio by hand); its record says what it used.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..seeding import generator
from .base import PRUNE, Change, EpochEnd, Policy
from .full import check_target

RATIO, GROUPS, WINDOW, DELTA = 0.1, 5, 0.9, 0.875  # SeTa's CIFAR script's "lossless" setting
KMEANS_STEPS = 50  # Lloyd iterations; one dimension settles in a few


def kmeans_1d(values: torch.Tensor, k: int, steps: int = KMEANS_STEPS) -> torch.Tensor:
    """The cluster (0 = lowest centre) of each value: Lloyd's algorithm in one dimension, started at
    evenly spaced quantiles. Deterministic; a cluster left empty keeps its centre."""
    values = values.double()
    centres = values.quantile(torch.linspace(0.5 / k, 1 - 0.5 / k, k, dtype=torch.float64))
    for _ in range(steps):
        assigned = (values[:, None] - centres[None, :]).abs().argmin(dim=1)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assigned, values)
        counts = torch.bincount(assigned, minlength=k)
        moved = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    rank = torch.empty(k, dtype=torch.int64)
    rank[centres.argsort()] = torch.arange(k)
    return rank[(values[:, None] - centres[None, :]).abs().argmin(dim=1)]


def window_of(step: int, groups: int, window: float) -> range:
    """The clusters trained at SeTa's ``step``-th selection (0: all of them): a window of
    ``round(groups x window)`` clusters starting at ``step mod (groups - size + 1)``."""
    size = max(1, round(groups * window))
    if step == 0:
        return range(groups)
    start = step % (groups - size + 1)
    return range(start, start + size)


class SeTa(Policy):
    """SeTa's random pruning, loss clusters and sliding window (module docstring). State: each
    sample's latest loss (4 bytes a sample, NaN before its first), the selections made, the samples
    trained, and the ratio used at each epoch."""

    name = "seta"

    def __init__(self, ratio: float = RATIO, groups: int = GROUPS, window: float = WINDOW, delta: float = DELTA,
                 target_compute: Optional[float] = None):
        if not 0.0 <= ratio < 1.0 or not 0.0 < window <= 1.0 or not 0.0 < delta <= 1.0:
            raise ValueError(f"seta ratio must lie in [0, 1), window in (0, 1] and delta in (0, 1]; got {ratio}, {window}, "
                             f"{delta}")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"seta groups must be an integer >= 1, got {groups!r}")
        self.ratio, self.groups, self.window, self.delta = float(ratio), groups, float(window), float(delta)
        self.target = check_target(target_compute)
        self.last_losses: Optional[torch.Tensor] = None
        self.step, self.samples_seen, self.in_window = 0, 0, 1.0
        self.ratios: list[float] = []

    def first_subset(self, schedule, num_samples: int, seed: int) -> torch.Tensor:
        self.last_losses, self.step, self.samples_seen, self.in_window, self.ratios = None, 0, 0, 1.0, []
        return self._random_share(num_samples, self._ratio(schedule.epochs, 0, num_samples), seed, 0)

    def end_epoch(self, end: EpochEnd) -> Optional[Change]:
        self.samples_seen += end.recorded
        if self.last_losses is None:
            self.last_losses = torch.full_like(end.losses, float("nan"))
        recorded = torch.isfinite(end.losses)
        self.last_losses[recorded] = end.losses[recorded]
        ratio = self._ratio(end.schedule.epochs, end.epoch, end.num_samples)
        drawn = self._random_share(end.num_samples, ratio, end.seed, end.epoch)
        if end.epoch + 1 > round(self.delta * end.schedule.epochs):  # annealing: the random share alone
            self.in_window = 1.0
            return Change(drawn, PRUNE)
        self.step += 1
        members = drawn.nonzero().squeeze(1)
        scores = self.last_losses[members].clone()
        seen = torch.isfinite(scores)
        scores[~seen] = scores[seen].max() if seen.any() else 0.0  # never trained (or non-finite): with the hardest
        cluster = kmeans_1d(scores, min(self.groups, members.numel()))
        keep = torch.isin(cluster, torch.tensor(list(window_of(self.step, self.groups, self.window))))
        self.in_window = float(keep.double().mean())
        chosen = torch.zeros(end.num_samples, dtype=torch.bool)
        chosen[members[keep] if keep.any() else members[:1]] = True  # never an empty epoch
        return Change(chosen, PRUNE)

    def _ratio(self, epochs: int, epoch: int, n: int) -> float:
        """The fixed ratio, or with a target the one that spends what is left evenly over the epochs to come."""
        ratio = self.ratio
        if self.target is not None:
            per_epoch = (self.target * epochs * n - self.samples_seen) / max(1, epochs - epoch)
            ratio = min(0.99, max(0.0, 1.0 - per_epoch / (n * self.in_window)))
        self.ratios.append(ratio)
        return ratio

    def _random_share(self, n: int, ratio: float, seed: int, epoch: int) -> torch.Tensor:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=generator(seed, epoch, "seta"))[:max(1, int((1.0 - ratio) * n))]] = True
        return mask

    def params(self) -> dict:
        return {"seta_ratio": self.ratio, "seta_groups": self.groups, "seta_window": self.window,
                "seta_delta": self.delta, "target_compute": self.target}

    def state_dict(self) -> dict:
        return {"last_losses": None if self.last_losses is None else self.last_losses.clone(), "step": self.step,
                "samples_seen": self.samples_seen, "in_window": self.in_window, "ratios": list(self.ratios)}

    def load_state_dict(self, state: dict) -> None:
        self.last_losses = None if state["last_losses"] is None else state["last_losses"].clone()
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        self.in_window, self.ratios = float(state["in_window"]), list(state["ratios"])
