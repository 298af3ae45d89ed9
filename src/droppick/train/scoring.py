"""The trainer's evaluation: top-1, top-5 and balanced top-1 of its model on a whole split."""

from __future__ import annotations

import torch

from .. import distributed


@torch.no_grad()
def evaluate_split(t, split) -> tuple[float, float, float]:
    """Top-1, top-5 and balanced top-1 accuracy (%) of ``t`` (a ``Trainer``) on the whole ``split``;
    each rank scores a slice. Balanced: the mean over the classes present of each class's top-1,
    which weighs a rare class as much as a common one."""
    distributed.broadcast_buffers(t.model)  # every rank scores rank 0's model, the one checkpointed
    t.model.eval()
    order = torch.arange(len(split))[t.rank::t.world]
    correct5 = 0
    per_class = torch.zeros(2, split.num_classes, dtype=torch.float64)  # rows: top-1 hits, samples
    for _, images, targets in split.batches(order, t.cfg.eval_batch_size, t.cfg.seed, 0):
        images, targets = t._to_device(images, targets)
        logits = t._forward(t.model, images)  # not the DDP wrapper: ranks run unequal batch counts
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == targets[:, None]
        correct5 += int(hits.any(dim=1).sum())
        per_class[0].index_add_(0, targets.cpu(), hits[:, 0].cpu().double())
        per_class[1].index_add_(0, targets.cpu(), torch.ones(len(targets), dtype=torch.float64))
    c5, n, *flat = distributed.all_reduce_sum([correct5, len(order), *per_class.flatten().tolist()])
    hits, counts = torch.tensor(flat).view(2, -1)
    present = counts > 0
    return (100.0 * float(hits.sum()) / n, 100.0 * c5 / n, 100.0 * float((hits[present] / counts[present]).mean()))
