"""Optimiser steps: the optimiser that takes them, whether the gradients allow one, how many each
epoch plans, and how far a per-step LR schedule has got.

The planner knows every epoch's subset size before training, so the steps of every epoch are
known too: a cosine schedule sized by them ends where the run ends although epochs shrink.
"""

from __future__ import annotations

import math

import torch

from ..sampler import per_rank


def optimizer_and_scaler(cfg, model: torch.nn.Module, device: torch.device):
    """The run's SGD over ``model`` (``cfg``'s lr, momentum, Nesterov and weight decay) and its GradScaler
    (active with fp16): the trainer's model and rho's holdout model train alike."""
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                weight_decay=cfg.weight_decay)
    return optimizer, torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")


def grads_finite(model: torch.nn.Module) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def planned_steps(cfg, dap, world_size: int) -> list[int]:
    """Optimiser steps of every epoch (``cfg``: a TrainConfig, ``dap``: a DropAndPick), known before
    training from the planner: each rank's padded shard of the subset, in batches of ``cfg.batch_size``."""
    return [math.ceil(per_rank(n, world_size) / cfg.batch_size) for n in dap.plan().subset_sizes]


def schedule_progress(steps: list[int], origin: tuple[int, float], epoch: int, step_in_epoch: int) -> float:
    """How far a per-step LR schedule (cosine) is, in [0, 1), at ``step_in_epoch`` of ``epoch``.

    ``origin = (epoch, progress)``: the run reached ``progress`` at the start of that epoch, and
    the rest of the schedule spreads over the planned ``steps`` of the epochs from there on. A run
    trained in one world size has origin (1, 0.0): progress is simply steps done / steps planned.
    A run resumed in another world size plans other steps per epoch (the shards change size), so
    its origin is the epoch it resumes at and the progress the old plan had reached there: the
    schedule continues from where it stopped, by the share of the remaining samples seen, and
    still ends with the last step.
    """
    first, done = origin
    remaining = steps[first - 1:]
    return done + (1.0 - done) * (sum(steps[first - 1:epoch - 1]) + step_in_epoch) / sum(remaining)
