"""The losses a training step back-propagates, after every sample's loss of the batch is recorded:
the whole batch's, or under Selective Backprop (``policies.selective_backprop``) a drawn part's, after
a forward pass over the whole batch without gradients (``backprop_losses``, which a loop of one's own
and a Lightning ``training_step`` call the same way)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..policies.selective_backprop import backprop_losses


def batch_losses(trainer, net: torch.nn.Module, indices: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
                 batch: int) -> torch.Tensor:
    """Per-sample losses to back-propagate for batch ``batch`` (0-based) of the epoch; records all of them."""
    whole = {}

    def sample_losses(at):
        if isinstance(at, slice):  # the whole batch: its logits go to record (--score el2n or margin)
            whole["logits"] = logits = trainer._forward(net, images).float()
            return F.cross_entropy(logits, targets, reduction="none")
        # the part back-propagated has a shape of its own: the eager module, not a compiled one
        return F.cross_entropy(trainer._forward(trainer.net, images[at]).float(), targets[at], reduction="none")

    recorded, trained = backprop_losses(trainer.dap, batch, sample_losses)
    trainer.dap.record(indices, recorded, logits=whole["logits"], targets=targets)
    return trained
