"""The ImageFolder loader: workers kept alive, throughput, and epoch time against subset size.

Targets (CPU, a generated JPEG set of 3,000 images at 128 px, 2 workers, the ImageNet train
transform at 112 px):
- epochs 2..n deliver their first batch within 50 ms (the workers are alive and prefetching
  starts with the epoch, no process is spawned);
- images/s >= 0.95 of the same transforms through torchvision's ``ImageFolder`` and a
  ``DataLoader`` with persistent workers (the best a user would write by hand), as the median
  of the per-epoch ratios over epochs 2..n (the other benchmarks' rule; the ratio of the sums is
  printed beside it);
- epoch time proportional to the subset size within 0.05 (seconds per image of a half-size
  epoch over that of a full one, minus 1; both counted from the first batch, which training
  prefetches).

Two phases, consuming every batch without a model, so the figures are the data path's alone:
1. throughput and proportionality: rounds in which three loaders take turns batch by batch
   (``epochs_taking_turns``), nothing between epochs: droppick runs one full epoch, a second
   droppick loader two half-size epochs (the two halves of the same order, one after the
   other), and torchvision one full epoch. Images/s compares droppick and torchvision on the
   same order; proportionality compares droppick's two loaders within one round. Every loader
   spans the whole round, so a slow spell or a drift of the machine falls on all three alike
   (a half epoch compared with a full one a minute apart was off by -0.065..+0.108; one half
   epoch beside a full one, all its turns in the round's first half, by -0.182..+0.037 per round
   over three runs, medians -0.057..+0.015).
2. epoch start: as in training, each loader's epoch (full and half size alternating) is followed
   by an evaluation pass on the val split (untimed), and droppick's trainer tells its loader the
   next epoch's order before that (``FolderSplit.prefetch``, once DaP has decided); torchvision's
   loader cannot know it.
``--quick``: 600 images, 3 epochs per phase (10 without).
"""

from __future__ import annotations

import gc
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from _common import header, parse_args, spread, verdict
from droppick.data.datasets import write_fake_imagefolder
from droppick.train.splits import build_splits
from droppick.data.transforms import imagenet_train_transform
from droppick.train.config import TrainConfig

WORKERS, BATCH, SIZE = 2, 64, 112


class OrderSampler(torch.utils.data.Sampler):
    """The torchvision baseline's sampler: the same per-epoch order as droppick's."""

    def __init__(self):
        self.order = torch.zeros(0, dtype=torch.int64)

    def __len__(self):
        return self.order.numel()

    def __iter__(self):
        return iter(self.order.tolist())


def worker_pids() -> set[int]:
    """This process's children (the DataLoader workers), from /proc."""
    pids = set()
    for children in Path("/proc/self/task").glob("*/children"):
        pids.update(int(pid) for pid in children.read_text().split())
    return pids


def cpu_seconds(pids) -> float:
    """User + system CPU seconds the processes have used (from /proc/PID/stat)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def signal_all(pids, sig) -> None:
    for pid in pids:
        os.kill(pid, sig)


def epochs_taking_turns(epochs: dict, workers: dict) -> dict:
    """Run the loaders batch by batch in turns, each through its epochs one after the other
    (``epochs[name]``: functions that start an epoch and return its batches). For each loader, a
    list with one ``{"first": seconds to its first batch, "seconds": the epoch's, "images", "cpu":
    its workers' CPU seconds, "main_cpu": this process's CPU seconds in its turns}`` per epoch.

    A loader's workers run only in its turns (SIGSTOP otherwise), so no two loaders run at
    once, and a slow spell of this machine (10-15 %, a second or two; an epoch takes 3 s) falls
    on all of them. A loader's epoch time is the sum of its turns: what it needs to deliver the
    batch, including the prefetching its workers do meanwhile. An epoch starts in its loader's
    turn, so starting it is that loader's cost.
    """
    pending = {name: list(starts) for name, starts in epochs.items()}
    results = {name: [] for name in epochs}
    current = {}  # name -> (batches, result) of the epoch it is in
    for pids in workers.values():
        signal_all(pids, signal.SIGSTOP)
    # As timeit does: a garbage collection of this process would land in one loader's turn.
    gc.collect()
    gc.disable()
    try:
        while pending:
            for name in list(pending):
                if name not in current:
                    current[name] = (None, {"first": None, "seconds": 0.0, "images": 0,
                                            "cpu": -cpu_seconds(workers[name]), "main_cpu": 0.0})
                batches, result = current[name]
                signal_all(workers[name], signal.SIGCONT)
                t0, cpu0 = time.perf_counter(), time.process_time()
                if batches is None:
                    batches = iter(pending[name].pop(0)())
                    current[name] = (batches, result)
                batch = next(batches, None)
                images = None if batch is None else len(batch[0])
                del batch  # released in this loader's turn: giving back its shared memory is its cost
                elapsed = time.perf_counter() - t0
                signal_all(workers[name], signal.SIGSTOP)
                result["seconds"] += elapsed
                result["main_cpu"] += time.process_time() - cpu0
                if images is None:  # the epoch ended
                    result["cpu"] += cpu_seconds(workers[name])
                    results[name].append(result)
                    del current[name]
                    if not pending[name]:
                        del pending[name]
                    continue
                if result["first"] is None:
                    result["first"] = result["seconds"]
                result["images"] += images
    finally:
        gc.enable()
        for pids in workers.values():
            signal_all(pids, signal.SIGCONT)
    return results


def timed_epoch(batches) -> tuple[float, float, int]:
    """(seconds to the first batch, seconds for the epoch, images)."""
    t0 = time.perf_counter()
    first, images = None, 0
    for batch in batches:
        first = first if first is not None else time.perf_counter() - t0
        images += len(batch[0])
    return first, time.perf_counter() - t0, images


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    header("ImageFolder loader: persistent workers, throughput, proportionality", args.quick)
    per_class, epochs = (60, 3) if args.quick else (300, 10)
    root = write_fake_imagefolder(Path(tempfile.mkdtemp(prefix="droppick-bench-folder-")), classes=10,
                                  per_class=per_class, size=128, split_names=("train", "val"))
    cfg = TrainConfig(dataset="imagefolder", data_dir=str(root), image_size=SIZE, eval_resize=128,
                      num_workers=WORKERS, device="cpu")
    ours, our_val = build_splits(cfg)
    ours_half, _ = build_splits(cfg)  # its own DataLoader and workers, for the half-size epochs
    from torchvision.datasets import ImageFolder

    from droppick.data.transforms import imagenet_eval_transform

    sampler = OrderSampler()
    theirs = DataLoader(ImageFolder(str(root / "train"), transform=imagenet_train_transform(SIZE)), batch_size=BATCH,
                        sampler=sampler, num_workers=WORKERS, persistent_workers=True, prefetch_factor=4)
    their_val = DataLoader(ImageFolder(str(root / "val"), transform=imagenet_eval_transform(128, SIZE)),
                           batch_size=BATCH, num_workers=WORKERS, persistent_workers=True)
    evaluate = {"droppick": lambda: sum(1 for _ in our_val.batches(torch.arange(len(our_val)), BATCH, 0, 0)),
                "torchvision": lambda: sum(1 for _ in their_val)}
    n = len(ours)
    print(f"{n} JPEGs of 128x128, {WORKERS} workers, batch {BATCH}, RandomResizedCrop {SIZE} + flip + normalise; "
          f"{epochs} epochs per phase")
    permutations = [torch.randperm(n, generator=torch.Generator().manual_seed(e)) for e in range(1, 2 * epochs + 2)]
    # orders[e - 1] for epoch e: 1 and 2 full, then odd full and even half; phase 2 runs epochs n+1..2n
    orders = [p[:n if e <= 2 or e % 2 else n // 2] for e, p in enumerate(permutations, start=1)]

    # An unmeasured short epoch each starts the workers (kept alive from then on); whose they are
    # is told apart by when they appeared.
    warm = orders[0][: 4 * BATCH]
    workers = {}
    for name, start in (("droppick", lambda: ours.batches(warm, BATCH, 0, 0)),
                        ("droppick-half", lambda: ours_half.batches(warm, BATCH, 0, 0)),
                        ("torchvision", lambda: theirs)):
        before, sampler.order = worker_pids(), warm
        sum(1 for _ in start())
        workers[name] = worker_pids() - before
    assert all(len(pids) == WORKERS for pids in workers.values()), workers

    def turns_phase(epoch_numbers) -> dict:
        """Per round: one full epoch of droppick and of torchvision, and two half epochs (the two
        halves of the same order) of droppick's second loader, so every loader spans the round."""
        results = {name: [] for name in workers}
        for epoch in epoch_numbers:
            order = sampler.order = permutations[epoch - 1]
            epochs = {"droppick": [lambda: ours.batches(order, BATCH, 0, epoch)],
                      "droppick-half": [lambda: ours_half.batches(order[: n // 2], BATCH, 0, epoch),
                                        lambda: ours_half.batches(order[n // 2:], BATCH, 0, epoch + 1)],
                      "torchvision": [lambda: theirs]}
            names = list(epochs)
            names = names[epoch % 3:] + names[: epoch % 3]  # who goes first rotates
            for name, runs in epochs_taking_turns({k: epochs[k] for k in names}, workers).items():
                sizes = [n // 2, n - n // 2] if name == "droppick-half" else [n]
                assert [r.pop("images") for r in runs] == sizes, (name, sizes)
                results[name].append([{"epoch": epoch, "size": size, **r} for size, r in zip(sizes, runs)])
        return results

    def phase(epoch_numbers) -> dict:  # epochs one after the other, as training runs them
        results = {"droppick": [], "torchvision": []}
        for epoch in epoch_numbers:
            order = sampler.order = orders[epoch - 1]
            runs = {"droppick": lambda: timed_epoch(ours.batches(order, BATCH, 0, epoch)),
                    "torchvision": lambda: timed_epoch(theirs)}
            for name in (list(runs) if epoch % 2 else list(runs)[::-1]):
                first, seconds, images = runs[name]()
                assert images == order.numel(), (name, images, order.numel())
                results[name].append({"epoch": epoch, "size": order.numel(), "first": first, "seconds": seconds})
                if name == "droppick":  # what the trainer does once DaP has decided the next subset
                    ours.prefetch(orders[epoch], BATCH, 0, epoch + 1)
                evaluate[name]()
        return results

    results = turns_phase(range(1, epochs + 1))
    starts = phase(range(epochs + 1, 2 * epochs + 1))
    print("| round | droppick first batch (ms) | droppick s | half-size first batches (ms) | half-size s "
          "| torchvision first batch (ms) | torchvision s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for rounds in zip(*results.values()):
        print(f"| {rounds[0][0]['epoch']} | " + " | ".join(
            " / ".join(f"{1000 * r['first']:.1f}" for r in runs) + " | " + " + ".join(f"{r['seconds']:.2f}" for r in runs)
            for runs in rounds) + " |")
    later = {name: [r for runs in rounds[1:] for r in runs] for name, rounds in results.items()}  # rounds 2..n
    for key, whose in (("cpu", "workers'"), ("main_cpu", "main process's")):
        cpu = {k: 1000 * sum(r[key] for r in v) / sum(r["size"] for r in v) for k, v in later.items()}
        print(f"{whose} CPU per image, rounds 2..n: " + ", ".join(f"{k} {v:.3f} ms" for k, v in cpu.items())
              + f" (droppick / torchvision {cpu['droppick'] / cpu['torchvision']:.3f})")
    print("phase 2, with evaluation between epochs: first batch (ms) droppick "
          + ", ".join(f"{1000 * r['first']:.1f}" for r in starts["droppick"]) + "; torchvision "
          + ", ".join(f"{1000 * r['first']:.1f}" for r in starts["torchvision"]))
    worst_first = max(r["first"] for r in starts["droppick"][1:])
    ok = verdict("first batch of epochs 2..n", worst_first <= 0.050,
                 f"worst {1000 * worst_first:.1f} ms (target 50 ms), with the trainer's prefetch during evaluation")
    rate = {k: sum(r["size"] for r in v) / sum(r["seconds"] for r in v) for k, v in later.items()}
    # As in the other benchmarks, the verdict is on the median of the per-round ratios: a round
    # slowed by another process moves one ratio, not the verdict (the ratio of sums is printed too).
    their_seconds, our_seconds = ([r["seconds"] for r in later[k]] for k in ("torchvision", "droppick"))
    ratio = statistics.median(t / o for t, o in zip(their_seconds, our_seconds))  # same sizes: a speed ratio
    ok &= verdict("images/s vs torchvision ImageFolder + persistent DataLoader", ratio >= 0.95,
                  f"median per-round ratio {ratio:.3f} ({spread(their_seconds, our_seconds)}); over rounds 2..n "
                  f"{rate['droppick']:.0f} vs {rate['torchvision']:.0f} images/s, "
                  f"{rate['droppick'] / rate['torchvision']:.3f} (target >= 0.95)")
    # From the first batch on: in training that batch is ready when the epoch starts (phase 2 checks
    # it), so the workers' pipeline filling up (as long in a half epoch as in a full one) is not
    # part of an epoch's time there. While the first batch is awaited every worker makes its own
    # first batch, so that wait holds WORKERS batches of work, not one.
    def per_image(runs):  # seconds per image over a round's epochs of one loader
        return sum(r["seconds"] - r["first"] for r in runs) / sum(r["size"] - WORKERS * BATCH for r in runs)

    gaps = [per_image(h) / per_image(f) - 1 for f, h in zip(results["droppick"][1:], results["droppick-half"][1:])]
    gap = statistics.median(gaps)
    ok &= verdict("epoch time proportional to subset size", abs(gap) <= 0.05,
                  f"seconds per image, two half-size epochs / the full epoch of the same round - 1: median "
                  f"{gap:+.3f} (rounds {min(gaps):+.3f}..{max(gaps):+.3f}; target within 0.05)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
