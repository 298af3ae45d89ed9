"""``droppick inspect RUN``: which samples DaP kept longest and dropped first, and per-class keep rates.

It reads the ``Retention`` record the trainer keeps beside the DaP state (``retention.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from ..train.retention import Retention

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# The ranking rules, also printed in the grids' titles.
KEPT_RULE = "most epochs trained, then highest last-epoch loss"
DROPPED_RULE = "earliest first drop, then lowest loss at that drop"


def _rank(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Indices sorted by ``primary`` ascending, ties by ``secondary`` ascending (NaN last), then by
    index: stable sorts applied from the last key to the first."""
    order = torch.arange(primary.numel())
    secondary = torch.nan_to_num(secondary.double(), nan=float("inf"))
    order = order[torch.sort(secondary[order], stable=True).indices]
    return order[torch.sort(primary[order].double(), stable=True).indices]


def hardest_and_easiest(retention: Retention, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` samples kept longest and the ``count`` dropped first (rules above).

    Thousands of samples tie on epochs trained (every one never dropped), so without the loss the
    "kept longest" grid would show whatever comes first in the file.
    """
    kept = _rank(-retention.epochs_trained, -retention.last_loss)
    dropped = _rank(retention.first_dropped, retention.drop_loss)
    dropped = dropped[retention.first_dropped[dropped] > 0]  # never dropped: not in this grid
    return kept[:count], dropped[:count]


def class_keep_rates(retention: Retention, labels: torch.Tensor, epochs: int) -> list[dict]:
    rows = []
    for c in range(int(labels.max()) + 1):
        members = labels == c
        trained = retention.epochs_trained[members].double()
        rows.append({"class": c, "samples": int(members.sum()),
                     "mean_epochs_trained": float(trained.mean()),
                     "keep_rate": float(trained.mean() / epochs),
                     "never_dropped": float((retention.first_dropped[members] == 0).double().mean())})
    return rows


def _thumbnails(split, indices: torch.Tensor) -> torch.Tensor:
    """uint8 [K, C, H, W] images for the grid, straight from the stored data (no augmentation)."""
    if hasattr(split, "images"):  # in-memory split
        return split.images.images[indices]
    from torchvision.transforms.v2 import functional as TF

    return torch.stack([TF.resize(TF.pil_to_tensor(split.dataset[int(i)][0]), [64, 64]) for i in indices])


def write_grid(images: torch.Tensor, captions: list[str], path: Path, title: str, columns: int = 8) -> None:
    from .plot import _pyplot

    plt = _pyplot()
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        image = image.permute(1, 2, 0).numpy()
        gray = image.shape[-1] == 1
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None)
        ax.set_title(caption, fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def inspect_run(run_dir: str | Path, out: Optional[str | Path] = None, count: int = 32) -> dict:
    """Write hardest.png, easiest.png and inspect.json/.md for a run; return the per-class rows."""
    from ..train.config import TrainConfig
    from ..train.splits import build_run_splits
    from ..train.rundir import RunDir

    run = RunDir(run_dir)
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise FileNotFoundError(f"{run.path} has no checkpoint to inspect")
    cfg = TrainConfig.from_dict(checkpoint["config"])
    if checkpoint["retention"] is None:
        raise ValueError(f"{run.path} was trained with --shard-state, which keeps no retention record (how long each "
                         "sample stayed, and its losses: 16 bytes for each of the N samples on one rank, what sharding "
                         "avoids); inspect reads that record: inspect a run trained without --shard-state")
    retention = Retention(0)
    retention.load_state_dict(checkpoint["retention"])
    split = build_run_splits(cfg)[0]
    if len(split) != retention.epochs_trained.numel():
        raise ValueError(f"the dataset now has {len(split)} training samples, the run had "
                         f"{retention.epochs_trained.numel()}: inspect needs the data the run trained on")
    names = {"fashion-mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}.get(cfg.dataset)
    names = names or getattr(getattr(split, "dataset", None), "classes", None)
    label = (lambda c: names[c]) if names else str
    out = Path(out or run.path)
    out.mkdir(parents=True, exist_ok=True)
    epochs = int(checkpoint["epoch"])
    hardest, easiest = hardest_and_easiest(retention, count)
    for indices, name, title, losses in (
            (hardest, "hardest", f"kept longest ({cfg.policy}, {epochs} epochs): {KEPT_RULE}", retention.last_loss),
            (easiest, "easiest", f"dropped first: {DROPPED_RULE}", retention.drop_loss)):
        captions = [f"#{int(i)} {label(int(split.labels[i]))}\n{int(retention.epochs_trained[i])} ep"
                    + (f", out@{int(retention.first_dropped[i])}" if retention.first_dropped[i] else "")
                    + f", loss {float(losses[i]):.2g}" for i in indices]
        write_grid(_thumbnails(split, indices), captions, out / f"{name}.png", title)
    rows = class_keep_rates(retention, split.labels, epochs)
    for row in rows:
        row["name"] = label(row["class"])
    (out / "inspect.json").write_text(json.dumps({"epochs": epochs, "classes": rows,
                                                  "hardest": hardest.tolist(), "easiest": easiest.tolist()}, indent=2))
    lines = [f"# What {cfg.policy} kept: {run.path}", "", f"After {epochs} epochs.", "",
             "| class | name | samples | mean epochs trained | keep rate | never dropped |",
             "| ---: | --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['class']} | {r['name']} | {r['samples']} | {r['mean_epochs_trained']:.2f} | "
              f"{100 * r['keep_rate']:.1f}% | {100 * r['never_dropped']:.1f}% |" for r in rows]
    lines += ["", "![hardest](hardest.png)", "", "![easiest](easiest.png)"]
    (out / "inspect.md").write_text("\n".join(lines) + "\n")
    return {"epochs": epochs, "classes": rows, "out": str(out)}
