"""Selective Backprop (Jiang et al. 2019, "Accelerating Deep Learning by Focusing on the Biggest
Losers"), as MosaicML Composer maintains it, in droppick's terms: the selection happens inside each
batch, not at the epoch's end.

Every epoch trains on all data. Between epochs ``start`` and ``end`` (inclusive), a batch of n samples
first runs forward without gradients on all of them; its losses are recorded as DaP's are; then
``int(keep x n)`` of them, drawn without replacement with probability rising with the loss's rank
(the rank's percentile to the power 1/keep - 1, Composer's rule), run forward and backward. Every
``interrupt``-th batch (0: none) trains whole, as Composer interleaves plain steps.

Its compute is not samples trained: a forward pass without gradients costs about a third of a training
step (forward and backward), the usual approximation. ``choose`` counts both, so a run reports the
samples back-propagated and its step-equivalents, n/3 + k for a selective batch and n for a whole one.

``backprop_losses`` is the one call a training step makes for it (``droppick train``'s, a loop of your
own, a Lightning ``training_step``): it runs the passes a batch needs and keeps those counts.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch

from ..seeding import generator
from .base import Policy

KEEP, START, INTERRUPT = 0.5, 1, 2  # Composer's keep and interrupt; start at the first epoch
FORWARD_COST = 1.0 / 3.0  # a forward pass without gradients, in training steps


class SelectiveBackprop(Policy):
    """All data every epoch; inside a batch, back-propagate a loss-weighted draw of ``keep`` of it
    (module docstring). ``end`` None: the last epoch. Counts, per epoch: ``forwarded`` (samples of
    selective batches), ``backprop`` (samples back-propagated, whole batches included)."""

    name = "selective_backprop"

    def __init__(self, keep: float = KEEP, start: int = START, end: Optional[int] = None, interrupt: int = INTERRUPT):
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0.0 < keep <= 1.0:
            raise ValueError(f"selective backprop keep must be a number in (0, 1] (the share of a batch back-propagated), "
                             f"got {keep!r}")
        if start < 1 or (end is not None and end < start) or interrupt < 0:
            raise ValueError(f"selective backprop needs 1 <= start <= end and interrupt >= 0; got start {start}, end {end}, "
                             f"interrupt {interrupt}")
        self.keep, self.start, self.end, self.interrupt = float(keep), int(start), end, int(interrupt)
        self.forwarded = self.backprop = 0  # this epoch's, on this process (the trainer sums the ranks')

    def selects(self, epoch: int, batch: int) -> bool:
        """Whether batch ``batch`` (0-based) of ``epoch`` back-propagates a selection, not the whole batch."""
        inside = self.start <= epoch and (self.end is None or epoch <= self.end)
        plain = self.interrupt and (batch + 1) % self.interrupt == 0
        return inside and not plain and self.keep < 1.0

    def choose(self, losses: torch.Tensor, seed: int, epoch: int, batch: int) -> torch.Tensor:
        """Positions in the batch to back-propagate: ``int(keep x n)`` (at least one) drawn without
        replacement, the sample of loss rank r (ascending, 0-based) with weight ((r + 0.5) / n)^(1/keep - 1)."""
        n = losses.numel()
        ranked = losses.detach().float().cpu().argsort()  # ascending: the hardest get the largest weights
        weights = ((torch.arange(n, dtype=torch.float64) + 0.5) / n) ** (1.0 / self.keep - 1.0)
        drawn = torch.multinomial(weights, max(1, int(self.keep * n)), replacement=False,
                                  generator=generator(seed, epoch, "selective-backprop", batch))
        self.forwarded += n
        self.backprop += drawn.numel()
        return ranked[drawn].sort().values

    def count_whole(self, n: int) -> None:
        """A batch trained whole: n samples back-propagated, no extra forward pass."""
        self.backprop += n

    def take_counts(self) -> dict:
        """This epoch's counts, reset for the next: samples back-propagated and step-equivalents."""
        counts = {"samples_backprop": self.backprop,
                  "step_equivalents": self.backprop + FORWARD_COST * self.forwarded}
        self.forwarded = self.backprop = 0
        return counts

    def params(self) -> dict:
        return {"sb_keep": self.keep, "sb_start": self.start, "sb_end": self.end, "sb_interrupt": self.interrupt}


Positions = Union[slice, torch.Tensor]  # the whole batch (slice(None)) or some of its positions


def refuse_other_scores(policy, score: str) -> None:
    """A ``ValueError`` for Selective Backprop (by name or object) with a score other than the loss: it
    ranks each batch by its loss, as Composer's, so another score would be recorded and never used."""
    if (policy == SelectiveBackprop.name or isinstance(policy, SelectiveBackprop)) and score != "loss":
        raise ValueError(f"selective_backprop ranks each batch by its loss (as Composer's), not by score {score!r}: "
                         f"remove --score (score=), or rank by {score} with --policy dap")


def backprop_losses(dap, batch: int, sample_losses: Callable[[Positions], torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``batch`` (0-based in the epoch) of a training step: ``(recorded, trained)``, every sample's
    loss (detached, what ``dap.record`` takes) and the per-sample losses to back-propagate.

    ``sample_losses(at)`` returns the per-sample losses of the batch's samples at ``at``, indexing
    the batch's tensors with it: ``slice(None)`` the whole batch, a LongTensor of positions a part.
    Under Selective Backprop, in a batch that selects (``selects(dap.epoch, batch)``) the whole
    batch runs without gradients, then the part ``choose`` draws (seeded by ``dap.seed``, as
    ``droppick train`` draws it) runs with them; in any other batch, and under any other policy,
    the whole batch runs once, with gradients, and ``recorded`` is ``trained`` detached. The
    policy's counts (``take_counts``) follow either way: call it once per epoch, or they add up."""
    policy = dap.policy
    selective = isinstance(policy, SelectiveBackprop)
    if not (selective and policy.selects(dap.epoch, batch)):
        losses = sample_losses(slice(None))
        if selective:
            policy.count_whole(losses.numel())
        return losses.detach(), losses
    with torch.no_grad():  # the selection pass: every sample's loss, about a third of a step each
        recorded = sample_losses(slice(None))
    keep = policy.choose(recorded, dap.seed, dap.epoch, batch).to(recorded.device)
    return recorded, sample_losses(keep)
