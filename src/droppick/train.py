"""``droppick train``: a Drop-and-Pick training run with a run directory, resumable per epoch.

The main loop reads top to bottom: set the learning rate, train on the current subset while
recording per-sample losses, let DaP drop or pick, evaluate, write metrics, save a checkpoint.

A resumed run restarts the epoch it was interrupted in from its beginning: every random
choice of an epoch (order, augmentation, random drops) comes from generators seeded by
(seed, epoch), so the redone epoch is the same as it would have been.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import data as dp_data
from .config import TrainConfig
from .engine import DropAndPick
from .models import build_model
from .rundir import RunDir
from .seeding import derive_seed, generator

CHECKPOINT_FORMAT = 1


def load_data(cfg: TrainConfig) -> tuple[dp_data.InMemoryImages, dp_data.InMemoryImages]:
    """Train and test splits in memory, sliced as the config says (seeded, class-stratified)."""
    root = dp_data.find_fashion_mnist(cfg.data_dir)
    splits = []
    for split, n, salt in (("train", cfg.train_samples, "train-slice"), ("test", cfg.test_samples, "test-slice")):
        images, labels = dp_data.load_fashion_mnist(root, split)
        if n is not None:
            if n > len(labels):
                raise ValueError(f"{split}_samples={n} but the {split} split has only {len(labels)} samples")
            keep = dp_data.stratified_slice(labels, n, derive_seed(cfg.seed, salt))
            images, labels = images[keep], labels[keep]
        splits.append(dp_data.InMemoryImages(images, labels))
    train, test = splits
    return train, dp_data.InMemoryImages(test.images, test.labels, mean=train.mean, std=train.std)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_seeded_model(cfg: TrainConfig, in_channels: int, num_classes: int) -> torch.nn.Module:
    # Initialisation draws from the global RNG; fork it so the caller's RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "model-init"))
        return build_model(cfg.model, num_classes=num_classes, in_channels=in_channels)


def subset_sha256(subset: torch.Tensor) -> str:
    return hashlib.sha256(subset.to(torch.int64).numpy().tobytes()).hexdigest()


def train_one_epoch(model, optimizer, train_set, dap: DropAndPick, cfg: TrainConfig, device, progress: bool) -> float:
    """One pass over the current subset; returns the mean training loss."""
    model.train()
    augment = generator(cfg.seed, dap.epoch, "augment")
    order = dap.sampler().indices()
    total, count = torch.zeros((), device=device), 0  # summed on the device: no sync per step
    # disable=None shows the bar only on a terminal, so logs stay one line per epoch.
    batches = tqdm(order.split(cfg.batch_size), desc=f"epoch {dap.epoch}", leave=False, disable=None if progress else True)
    for indices in batches:
        images, targets = train_set.batch(indices, augment, padding=cfg.augment_padding, flip=cfg.augment_flip)
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        losses = F.cross_entropy(model(images), targets, reduction="none")
        dap.record(indices, losses)
        loss = losses.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(indices)
        count += len(indices)
    return float(total) / max(count, 1)


@torch.no_grad()
def evaluate(model, test_set, cfg: TrainConfig, device) -> float:
    """Top-1 accuracy (%) on the whole test split, no augmentation."""
    model.eval()
    correct = 0
    for indices in torch.arange(len(test_set)).split(cfg.eval_batch_size):
        images, targets = test_set.batch(indices, None)
        correct += int((model(images.to(device)).argmax(1).cpu() == targets).sum())
    return 100.0 * correct / len(test_set)


def train(cfg: Optional[TrainConfig], out: str | Path, resume: bool = False, progress: bool = False,
          stop_after: Optional[int] = None) -> Optional[dict]:
    """Run (or resume) training into run directory ``out``; returns the summary.

    With ``resume=True``, ``cfg`` is ignored (pass None): the run continues with its saved config.

    ``stop_after``: end this process after that epoch's checkpoint (the run stays resumable, and
    no summary is written yet): long runs can be split across sessions.
    """
    run = RunDir(out)
    if resume:
        if not run.config_path.exists():
            raise FileNotFoundError(f"cannot resume: {run.config_path} does not exist")
        cfg = TrainConfig.load(run.config_path)
    elif run.checkpoints() or run.metrics_path.exists():
        raise FileExistsError(f"{run.path} already holds a run; resume it with --resume {run.path} or choose another --out")
    device = resolve_device(cfg.device)
    train_set, test_set = load_data(cfg)
    num_classes = int(train_set.labels.max()) + 1
    model = build_seeded_model(cfg, train_set.images.shape[1], num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    dap = DropAndPick(len(train_set), cfg.schedule, policy=cfg.policy, seed=cfg.seed)
    planned = dap.plan()

    wall_before = 0.0
    checkpoint = run.latest_checkpoint() if resume else None
    if checkpoint is not None:
        _check_compatible(checkpoint, cfg)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        dap.load_state_dict(checkpoint["dap"])
        wall_before = checkpoint["wall_seconds"]
    run.path.mkdir(parents=True, exist_ok=True)
    cfg.save(run.config_path)
    history = run.truncate_metrics(before_epoch=dap.epoch)

    started = time.perf_counter()
    while not dap.done:
        epoch, lr = dap.epoch, cfg.lr_at(dap.epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        trained_subset = dap.subset
        tick = time.perf_counter()
        train_loss = train_one_epoch(model, optimizer, train_set, dap, cfg, device, progress)
        event = dap.end_epoch()
        epoch_seconds = time.perf_counter() - tick
        tick = time.perf_counter()
        test_top1 = evaluate(model, test_set, cfg, device)
        row = {
            "epoch": epoch,
            "lr": lr,
            "subset_size": int(trained_subset.numel()),
            "samples_seen": dap.samples_per_epoch[-1],
            "event": event,
            "train_loss": train_loss,
            "test_top1": test_top1,
            "epoch_seconds": epoch_seconds,
            "eval_seconds": time.perf_counter() - tick,
            "compute_fraction": dap.compute_fraction,
            "subset_sha256": subset_sha256(trained_subset),
        }
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"epoch {epoch}: training loss is {train_loss}")
        run.append_metrics(row)
        history.append(row)
        wall = wall_before + time.perf_counter() - started
        run.save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "config": cfg.to_dict(),
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "dap": dap.state_dict(),
                "wall_seconds": wall,
            },
            epoch,
        )
        if progress:
            tqdm.write(f"epoch {epoch:3d}  subset {row['subset_size']:6d}  loss {train_loss:.4f}  "
                       f"test top-1 {test_top1:6.2f}%  {event or ''}")
        if stop_after is not None and epoch >= stop_after and not dap.done:
            return None

    summary = {
        "policy": cfg.policy,
        "seed": cfg.seed,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "epochs": cfg.epochs,
        "num_train_samples": len(train_set),
        "num_test_samples": len(test_set),
        "final_test_top1": history[-1]["test_top1"],
        "best_test_top1": max(m["test_top1"] for m in history),
        "compute_fraction": dap.compute_fraction,
        "planned_compute_fraction": planned.compute_fraction,
        "samples_seen": dap.samples_seen,
        "train_seconds": sum(m["epoch_seconds"] for m in history),
        "wall_seconds": wall_before + time.perf_counter() - started,
        "device": str(device),
    }
    run.write_summary(summary)
    return summary


def _check_compatible(checkpoint: dict, cfg: TrainConfig) -> None:
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {checkpoint.get('format')!r} is not {CHECKPOINT_FORMAT}")
    saved = checkpoint["config"]
    for key in ("model", "dataset", "train_samples", "seed", "policy"):
        if saved[key] != getattr(cfg, key):
            raise ValueError(f"checkpoint was made with {key}={saved[key]!r}, the run config says {getattr(cfg, key)!r}")

