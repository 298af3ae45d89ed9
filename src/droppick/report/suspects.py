"""``droppick suspects RUN``: the training samples whose given label is most likely wrong.

The ranking is ``DropAndPick.suspects``, the mean loss each sample had over the epochs it trained
in, read from the run's last checkpoint. One forward pass over the training data with the final
model, without augmentation, adds each sample's predicted label; nothing else is trained or passed.
Writes RUN/suspects.csv (most suspect first) and RUN/suspects.png, says how many samples are flagged
(their mean score worse than a uniform guess's: ``droppick.suspects.uniform_guess``), and, when the
run injected its own noise (``--label-noise``), how many of the top suspects are among the flipped labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import torch

from .inspection import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, _thumbnails, write_grid

COLUMNS = ("index", "given_label", "predicted_label", "score", "epochs_trained")
GALLERY = 32  # suspects in the picture


@torch.no_grad()
def probabilities(trainer, split=None) -> Optional[torch.Tensor]:
    """The model's softmax over the classes for every sample of ``split`` (default: the training
    split), one pass without augmentation; None for a streamed split (its training transform
    augments, so a plain pass would need the eval transform)."""
    from ..data.pipeline import InMemorySplit

    split = trainer.train_split if split is None else split
    if not isinstance(split, InMemorySplit):
        return None
    plain = InMemorySplit(split.images, False, num_classes=split.num_classes)
    trainer.model.eval()
    out = torch.empty(len(plain), split.num_classes)
    for indices, images, _ in plain.batches(torch.arange(len(plain)), trainer.cfg.eval_batch_size, 0, 0):
        out[indices] = trainer._forward(trainer.model, images.to(trainer.device)).float().softmax(dim=1).cpu()
    return out


def load_trainer(run_dir: str | Path):
    """The ``Trainer`` of a run as its last checkpoint left it (model and DaP state), and that checkpoint."""
    from .. import distributed
    from ..train.config import TrainConfig
    from ..train.dap_state import with_dap_state
    from ..train.rundir import RunDir
    from ..train.trainer import Trainer

    run = RunDir(run_dir)
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint: suspects reads the losses a run recorded")
    trainer = Trainer(TrainConfig.from_dict(checkpoint["config"]), distributed.setup_from_env(checkpoint["config"]["device"]))
    trainer.model.load_state_dict(checkpoint["model"])
    trainer.dap.load_state_dict(with_dap_state(run, checkpoint, trainer.rank, trainer.world)["dap"])  # --shard-state: its shards
    return trainer, checkpoint


def find_suspects(run_dir: str | Path, top: int | str = 100) -> dict:
    """Write suspects.csv and suspects.png in ``run_dir`` with the ``top`` suspects (``"flagged"``: as
    many as are flagged, at least one); return the rows, the flagged count and, with injected noise,
    how many of the rows are flipped labels."""
    from ..suspects import uniform_guess
    from ..train.rundir import RunDir

    if top != "flagged" and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive number of suspects or 'flagged', got {top!r}")
    run = RunDir(run_dir)
    trainer, checkpoint = load_trainer(run.path)
    cfg = trainer.cfg
    n = len(trainer.train_split)
    flagged = trainer.dap.loss_stats.above(uniform_guess(cfg.score, trainer.train_split.num_classes)).numel()
    indices, scores = trainer.dap.suspects(min(max(flagged, 1) if top == "flagged" else top, n))
    labels, counts = trainer.train_split.labels, trainer.dap.loss_stats.loss_epochs
    probs = probabilities(trainer)
    predicted = None if probs is None else probs.argmax(dim=1)
    rows = [{"index": int(i), "given_label": int(labels[i]),
             "predicted_label": "" if predicted is None else int(predicted[i]), "score": round(float(s), 6),
             "epochs_trained": int(counts[i])} for i, s in zip(indices, scores)]
    with open(run.path / "suspects.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    names = {"fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}.get(cfg.dataset)
    label = (lambda c: names[c]) if names else str
    shown = indices[:GALLERY]
    captions = [f"#{r['index']} given {label(r['given_label'])}"
                + ("" if r["predicted_label"] == "" else f"\nmodel: {label(r['predicted_label'])}")
                + f", {cfg.score} {r['score']:.2g}" for r in rows[:GALLERY]]
    write_grid(_thumbnails(trainer.train_split, shown), captions, run.path / "suspects.png",
               f"most suspect labels ({cfg.policy}, {int(checkpoint['epoch'])} epochs): highest mean {cfg.score} over "
               "the epochs each sample trained in")
    result = {"rows": rows, "out": str(run.path), "flagged": flagged, "samples": n, "score": cfg.score}
    if run.label_noise_path.exists():
        flipped = set(json.loads(run.label_noise_path.read_text())["flipped"])
        result["flipped_in_top"] = sum(r["index"] in flipped for r in rows)
        result["flipped_total"] = len(flipped)
    return result
