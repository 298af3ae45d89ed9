"""The losses a training step back-propagates, after every sample's loss of the batch is recorded:
the whole batch's, or under Selective Backprop (``policies.selective_backprop``) a drawn part's, after
a forward pass over the whole batch without gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..policies.selective_backprop import SelectiveBackprop


def batch_losses(trainer, net: torch.nn.Module, indices: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
                 batch: int) -> torch.Tensor:
    """Per-sample losses to back-propagate for batch ``batch`` (0-based) of the epoch; records all of them."""
    dap, policy = trainer.dap, trainer.dap.policy
    selective = isinstance(policy, SelectiveBackprop)
    if not (selective and policy.selects(dap.epoch, batch)):
        logits = trainer._forward(net, images).float()
        losses = F.cross_entropy(logits, targets, reduction="none")
        dap.record(indices, losses, logits=logits, targets=targets)  # the logits: for --score el2n or margin
        if selective:
            policy.count_whole(len(indices))
        return losses
    with torch.no_grad():  # the selection pass: every sample's loss, about a third of a step each
        logits = trainer._forward(net, images).float()
        losses = F.cross_entropy(logits, targets, reduction="none")
    dap.record(indices, losses, logits=logits, targets=targets)
    keep = policy.choose(losses, trainer.cfg.seed, dap.epoch, batch).to(images.device)
    # the part back-propagated has a shape of its own: the eager module, not a compiled one
    return F.cross_entropy(trainer._forward(trainer.net, images[keep]).float(), targets[keep], reduction="none")
