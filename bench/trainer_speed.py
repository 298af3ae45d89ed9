"""Trainer speed: ``droppick train``'s images/s against a minimal hand-written PyTorch loop.

Target: (trainer images/s) / (hand loop images/s) >= 0.95.

Both train small_cnn (same initial weights) on Fashion-MNIST held in memory, batches of 128,
with the same batched crop/flip (``InMemoryImages.batch``), SGD with momentum. The trainer is
``train.Trainer`` with DaP on (``policy="dap"``): an epoch is ``train_epoch`` + ``end_epoch``,
what ``droppick train`` reports as ``epoch_seconds``. The hand loop is the textbook one: a
``randperm`` order, ``F.cross_entropy(reduction="mean")``, backward, step; each epoch it trains
on as many images as the trainer's subset holds that epoch. Epochs alternate (trainer, hand,
hand, trainer, ...) and the verdict is on the median of the per-epoch-pair ratios.

``--device cuda`` runs the same comparison on a GPU with ResNet-20 (a small CNN there measures
little but kernel launches), and adds a third loop: the hand loop plus a host copy of the
per-sample losses after every step, what ``DropAndPick.record`` cost before it deferred that
copy to ``flush()``. Its ratio shows what a per-step sync would cost on that GPU.

Then one more trainer epoch runs with the profiler of ``droppick train --profile`` on, to show
where an epoch's time goes.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from _common import FASHION_MNIST, header, parse_args, verdict
from droppick.train.config import TrainConfig
from droppick.seeding import generator
from droppick.train.trainer import Trainer, build_seeded_model

TARGET = 0.95


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument(
        "--device", default="cpu", help="cpu (small_cnn) or cuda (resnet20, plus the per-step-copy loop)"))
    header(f"trainer speed: droppick Trainer vs a minimal PyTorch loop, on {args.device}", args.quick)
    device = torch.device(args.device)
    gpu = device.type != "cpu"
    torch.backends.cudnn.benchmark = gpu  # as train() sets it (the trainer still skips partial batches)
    n, epochs = (1000, 3) if args.quick else ((20000, 6) if gpu else (5000, 8))
    cfg = TrainConfig(dataset="fashion-mnist", data_dir=FASHION_MNIST, model="resnet20" if gpu else "small_cnn",
                      train_samples=n, test_samples=100, batch_size=128, lr=0.05, policy="dap", epochs=epochs + 1,
                      warmup=1, interval=1, keep=0.9, reuse_at=[], seed=0, device=args.device)
    trainer = Trainer(cfg, device)
    images = trainer.train_split.images  # the same uint8 tensor, normalisation and augmentation
    model = build_seeded_model(cfg, trainer.train_split.in_channels, 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(1)

    def hand_epoch(count: int, epoch: int, copy_losses: bool = False) -> None:
        model.train()
        aug = generator(1, epoch, "augment")
        for idx in torch.randperm(n, generator=order_gen)[:count].split(cfg.batch_size):
            x, y = images.batch(idx, aug, padding=cfg.augment_padding, flip=cfg.augment_flip)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            losses = F.cross_entropy(model(x), y, reduction="none" if copy_losses else "mean")
            if copy_losses:
                losses.detach().cpu()  # waits for this step's forward to finish
            opt.zero_grad(set_to_none=True)
            losses.mean().backward()
            opt.step()
        if gpu:
            torch.cuda.synchronize(device)

    def trainer_epoch() -> None:
        trainer.train_epoch(progress=False)
        trainer.dap.end_epoch()

    hand_epoch(256, 0)  # warm-up, untimed (oneDNN primitives or cudnn, allocator)
    for _, x, y in trainer.train_split.batches(torch.arange(256), cfg.batch_size, 0, 0):  # and the trainer's
        F.cross_entropy(trainer.model(x.to(device)), y.to(device)).backward()  # model (weights unchanged)
    trainer.optimizer.zero_grad(set_to_none=True)
    loops = {"trainer": lambda count, e: trainer_epoch(), "hand": hand_epoch}
    if gpu:
        loops["hand + per-step copy"] = lambda count, e: hand_epoch(count, e, copy_losses=True)
    names = list(loops)
    ratios, copy_ratios, rates = [], [], {name: [] for name in names}
    for e in range(epochs):
        count = trainer.dap.subset.numel()
        seconds = {}
        for name in (names if e % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            loops[name](count, e + 1)
            seconds[name] = time.perf_counter() - t0
            rates[name].append(count / seconds[name])
        ratios.append(seconds["hand"] / seconds["trainer"])  # = trainer images/s over hand images/s
        if gpu:
            copy_ratios.append(seconds["hand"] / seconds["hand + per-step copy"])
        print(f"epoch {e + 1}: {count} images each; "
              + ", ".join(f"{name} {count / seconds[name]:6.0f} images/s" for name in names)
              + f"; trainer/hand {ratios[-1]:.3f}")
    ratio = statistics.median(ratios)

    prof = trainer.profiler
    prof.enabled = True
    samples = trainer.dap.subset.numel()
    trainer.train_epoch(progress=False)  # starts the profiler's epoch table itself
    trainer.dap.end_epoch()
    prof.lap("dap end_epoch")
    print(prof.report(f"one trainer epoch ({samples} images, batch {cfg.batch_size}, {torch.get_num_threads()} thread(s))",
                      samples=samples))
    print("images/s median: " + ", ".join(f"{name} {statistics.median(r):.0f}" for name, r in rates.items())
          + f"; trainer/hand ratio per epoch {', '.join(f'{r:.3f}' for r in ratios)}")
    if gpu:
        print(f"a host copy of the losses after every step: {statistics.median(copy_ratios):.3f} of the hand "
              "loop's images/s (median; informational, not a target)")
    verdict("trainer speed", ratio >= TARGET, f"median trainer/hand images/s ratio {ratio:.3f} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
