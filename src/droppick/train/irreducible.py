"""``--policy rho``: the irreducible losses RHO-LOSS ranks by (Mindermann et al. 2022), computed before epoch 1.

A model of the run's class (a fresh initialisation seeded from the run's seed) trains on the validation
split (``--val-samples``, as noisy as the training split: nobody has clean labels) for ``rho_epochs``
epochs with the run's optimiser settings, augmentation and batch size, its learning rate falling from the
run's along half a cosine over its steps. It then scores every training sample once, in eval mode and
without augmentation: that loss is the sample's irreducible loss, handed to the rule
(``KeepHighestReducible.set_irreducible``), which keeps it in its state, so a resumed run reads it from the
checkpoint and trains nothing again.

It is extra compute, reported as such: ``holdout_samples`` (validation samples trained, val_samples x
rho_epochs) and ``holdout_forward`` (training samples scored, N) in epoch 1's metrics row and the summary,
whose ``step_equivalent_fraction`` adds them to the samples DaP trained, a forward pass without gradients
as a third of a step (``selective_backprop.FORWARD_COST``), over the all-data run's E x N.

Under torchrun every rank trains the same holdout model (same seed, same batches) and scores its share of
the training samples; the shares are gathered, so every rank hands its rule the same losses.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .. import distributed
from ..data.pipeline import InMemorySplit
from ..models import build_model
from ..policies import KeepHighestReducible
from ..policies.selective_backprop import FORWARD_COST
from ..seeding import derive_seed, seeded_global_rng
from .steps import optimizer_and_scaler


def needs_irreducible(dap) -> bool:
    """Whether ``dap`` runs rho and its rule has no irreducible losses yet (a fresh run, not a resumed one)."""
    rule = getattr(dap.policy, "rule", None)
    return isinstance(rule, KeepHighestReducible) and rule.irreducible is None


def holdout_counts(t) -> dict:
    """What the holdout costs a run of ``t`` (a ``Trainer``): samples trained and samples scored."""
    return {"holdout_samples": len(t.val_split) * t.cfg.rho_epochs, "holdout_forward": len(t.train_split)}


def fit_irreducible(t) -> dict:
    """Train the holdout model, hand every training sample's irreducible loss to ``t``'s rule, and return
    the counts and seconds for epoch 1's metrics row."""
    tick = time.perf_counter()
    model = _train_holdout(t)
    losses = _score(t, model)
    bad = (~torch.isfinite(losses)).nonzero().squeeze(1)
    if bad.numel():
        raise FloatingPointError(f"policy rho: the model trained on the validation split gives training samples "
                                 f"{bad[:10].tolist()} a non-finite loss: it diverged; lower --lr (it trains at the run's)")
    t.dap.policy.rule.set_irreducible(losses)
    return holdout_counts(t) | {"holdout_seconds": time.perf_counter() - tick}


def holdout_summary(t, history: list[dict]) -> dict:
    """The summary's holdout keys, and ``step_equivalent_fraction``: all the run spent, in training steps."""
    counts = holdout_counts(t)
    spent = t.dap.samples_seen + counts["holdout_samples"] + FORWARD_COST * counts["holdout_forward"]
    return counts | {"holdout_seconds": sum(m.get("holdout_seconds", 0.0) for m in history),
                     "step_equivalent_fraction": spent / t.dap.plan().full_samples}


def _train_holdout(t) -> torch.nn.Module:
    # the global CPU RNG (the initialisation, any dropout) seeded for the holdout and restored after it, so the
    # run's own draws are those of a run without it
    with seeded_global_rng(t.cfg.seed, "rho-holdout"):
        return _train_holdout_seeded(t)


def _train_holdout_seeded(t) -> torch.nn.Module:
    cfg, val = t.cfg, t.val_split
    model = build_model(cfg.model, num_classes=val.num_classes, in_channels=val.in_channels).to(t.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scaler = optimizer_and_scaler(cfg, model, t.device)
    augmented = InMemorySplit(val.images, True, num_classes=val.num_classes, padding=cfg.augment_padding,
                              flip=cfg.augment_flip)
    seed, steps = derive_seed(cfg.seed, "rho-holdout"), cfg.rho_epochs * math.ceil(len(val) / cfg.batch_size)
    model.train()
    step = 0
    for epoch in range(1, cfg.rho_epochs + 1):
        order = torch.randperm(len(val), generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))
        for _, images, targets in augmented.batches(order, cfg.batch_size, seed, epoch):
            for group in optimizer.param_groups:
                group["lr"] = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * step / steps))
            images, targets = t._to_device(images, targets)
            loss = F.cross_entropy(t._forward(model, images).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
    return model


@torch.no_grad()
def _score(t, model: torch.nn.Module) -> torch.Tensor:
    """Every training sample's loss under ``model``: each rank scores every world-th sample, all gather."""
    cfg, train = t.cfg, t.train_split
    model.eval()
    plain = InMemorySplit(train.images, False, num_classes=train.num_classes)  # no augmentation
    n = len(plain)
    order = torch.arange(n)[t.rank::t.world]
    parts = [torch.zeros(0)]
    for _, images, targets in plain.batches(order, cfg.eval_batch_size, cfg.seed, 0):
        images, targets = t._to_device(images, targets)
        parts.append(F.cross_entropy(t._forward(model, images).float(), targets, reduction="none").cpu())
    losses = torch.empty(n, dtype=torch.float32)
    for rank, part in enumerate(distributed.all_gather_uneven(torch.cat(parts))):
        losses[torch.arange(n)[rank::t.world]] = part
    return losses
