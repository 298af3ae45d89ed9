"""Which samples' given labels are most likely wrong, from what a run records anyway.

A mislabelled sample keeps a high loss however well the model learns, where a hard but correctly
labelled one's falls as the model learns it (Pleiss et al. 2020, Swayamdipta et al. 2020: training
dynamics find wrong labels). ``LossStats`` sums each sample's loss over the epochs it trained in (6
bytes a sample, no extra pass: the losses are the ones DaP records, with augmentation); the score is
that mean, the highest the most suspect.

How many to flag: those whose mean score is worse than a uniform guess's (``uniform_guess``): on
average over its epochs the model gave the given label less than an untrained model would. It needs
no threshold to tune and no extra pass. On the detection experiment's validation settings it beat
counting the final model's disagreements for a DaP run's suspects, and lost to it by a few points of
F1 for a full run's; we kept one reading for every run (experiments/fashion-mnist/noise/detection/README.md
has both). The ranking is better from a full run than from a DaP run, whose drops train on the wrong
labels until they are learnt (the same page).
"""

from __future__ import annotations

import math

import torch

from .scores import SCORES, check_score


class LossStats:
    """Per-sample running sum and count of recorded losses; saved and restored exactly."""

    def __init__(self, num_samples: int):
        self.loss_sum = torch.zeros(num_samples, dtype=torch.float32)
        self.loss_epochs = torch.zeros(num_samples, dtype=torch.int16)

    def update(self, losses: torch.Tensor, recorded: torch.Tensor) -> None:
        """Add one epoch: ``losses`` of the samples where ``recorded`` (a bool mask) is set. Dense adds,
        not masked ones (6x faster at 16M samples): an unrecorded sample adds 0.0 and 0, so every sum is
        the same float as before."""
        self.loss_sum += torch.where(recorded, losses, 0.0)
        self.loss_epochs += recorded

    def scores(self) -> torch.Tensor:
        """Each sample's mean recorded loss; -inf for a sample never recorded."""
        return torch.where(self.loss_epochs > 0, self.loss_sum / self.loss_epochs.clamp(min=1), float("-inf"))

    def above(self, threshold: float) -> torch.Tensor:
        """The indices, ascending, of the samples whose mean score is above ``threshold`` (one never
        recorded is not)."""
        return (self.scores() > threshold).nonzero().squeeze(1)

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices, scores) of the ``k`` highest scores, highest first, ties to the lower index."""
        scores = self.scores()
        order = torch.sort(-scores, stable=True).indices[:k]
        return order, scores[order]

    def state_dict(self) -> dict:
        return {"loss_sum": self.loss_sum.clone(), "loss_epochs": self.loss_epochs.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.loss_sum = state["loss_sum"].to(torch.float32).clone()
        self.loss_epochs = state["loss_epochs"].to(torch.int16).clone()


def uniform_guess(score: str, num_classes: int) -> float:
    """The score a uniform prediction over ``num_classes`` classes gets: ln C for ``"loss"`` (cross-entropy,
    with or without label smoothing), ``sqrt(1 - 1/C)`` for EL2N, 1 for the margin; a registered score
    is asked for it (its ``fn`` on all-zero logits)."""
    fn = SCORES[check_score(score)]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if fn is None:
        return math.log(num_classes)
    return float(fn(torch.zeros(1, num_classes), torch.zeros(1, dtype=torch.long))[0])
