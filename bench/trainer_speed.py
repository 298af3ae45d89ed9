"""Trainer speed: ``droppick train``'s images/s against a minimal hand-written PyTorch loop.

Target: (trainer images/s) / (hand loop images/s) >= 0.95.

Both train small_cnn (same initial weights) on Fashion-MNIST held in memory, batches of 128,
with the same batched crop/flip (``InMemoryImages.batch``), SGD with momentum. The trainer is
``train.Trainer`` with DaP on (``policy="dap"``): an epoch is ``train_epoch`` + ``end_epoch``,
what ``droppick train`` reports as ``epoch_seconds``. The hand loop is the textbook one: a
``randperm`` order, ``F.cross_entropy(reduction="mean")``, backward, step; each epoch it trains
on as many images as the trainer's subset holds that epoch. On the CPU the two epochs run side
by side, taking turns batch by batch (``_common.TakeTurns``), so this machine's slow spells of a
second or two fall on both; on a GPU whole epochs alternate (trainer, hand, hand, trainer, ...).
The verdict is on the median of the per-epoch ratios.

``--device cuda`` runs the same comparison on a GPU with ResNet-20 (a small CNN there measures
little but kernel launches), and adds a third loop: the hand loop plus a host copy of the
per-sample losses after every step, what ``DropAndPick.record`` cost before it deferred that
copy to ``flush()``. Its ratio shows what a per-step sync would cost on that GPU.

Then one more trainer epoch runs with the profiler of ``droppick train --profile`` on, to show
where an epoch's time goes.
"""

from __future__ import annotations

import functools
import statistics

import torch
import torch.nn.functional as F

from _common import FASHION_MNIST, TakeTurns, hand_on_after_each_batch, header, parse_args, verdict
from droppick.train.config import TrainConfig
from droppick.seeding import generator
from droppick.train.trainer import Trainer, build_seeded_model

TARGET = 0.95


GPU_IMAGES_PER_S = 50_000  # ResNet-20, batch 512, bf16, channels_last on an H100/H200-class GPU


def options(p) -> None:
    p.add_argument("--device", default="cpu", help="cpu (small_cnn) or cuda (resnet20, plus the per-step-copy loop)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--amp", default="none", choices=("none", "bf16"), help="autocast dtype, both loops")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and inputs, both loops")
    p.add_argument("--samples", type=int, default=None, help="training images (default 20,000 on a GPU, 5,000 on CPU)")


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], options)
    header(f"trainer speed: droppick Trainer vs a minimal PyTorch loop, on {args.device}", args.quick)
    device = torch.device(args.device)
    gpu = device.type != "cpu"
    torch.backends.cudnn.benchmark = gpu  # as train() sets it (the trainer still skips partial batches)
    n, epochs = (500, 2) if args.quick else ((20000, 6) if gpu else (5000, 8))
    n = args.samples or n
    cfg = TrainConfig(dataset="fashion-mnist", data_dir=FASHION_MNIST, model="resnet20" if gpu else "small_cnn",
                      train_samples=n, test_samples=100, batch_size=args.batch_size, lr=0.05, policy="dap",
                      epochs=epochs + 1, warmup=1, interval=1, keep=0.9, reuse_at=[], seed=0, device=args.device,
                      amp=args.amp, channels_last=args.channels_last)
    print(f"model {cfg.model}, batch {cfg.batch_size}, amp {cfg.amp}, channels_last {cfg.channels_last}, {n} images")
    trainer = Trainer(cfg, device)
    # The hand loop is airbench's shape: the same uint8 tensor on the device, the same batched
    # crop/flip there, no DataLoader.
    images = trainer.train_split.images
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_seeded_model(cfg, trainer.train_split.in_channels, 10).to(device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")

    turns = TakeTurns()
    hand_turns = False  # set once the warm-up is over (CPU only)

    def hand_epoch(count: int, epoch: int, copy_losses: bool = False) -> None:
        model.train()
        aug = generator(1, epoch, "augment", device=device)
        order = torch.randperm(n, generator=order_gen)[:count].to(device)
        for idx in order.split(cfg.batch_size):
            x, y = images.batch(idx, aug, padding=cfg.augment_padding, flip=cfg.augment_flip)
            x = x.contiguous(memory_format=fmt)
            with autocast:
                logits = model(x)
            losses = F.cross_entropy(logits.float(), y, reduction="none" if copy_losses else "mean")
            if copy_losses:
                losses.detach().cpu()  # waits for this step's forward to finish
            opt.zero_grad(set_to_none=True)
            losses.mean().backward()
            opt.step()
            if hand_turns:
                turns.turn("hand")
        if gpu:
            torch.cuda.synchronize(device)

    def trainer_epoch() -> None:
        trainer.train_epoch(progress=False)
        trainer.dap.end_epoch()

    hand_epoch(256, 0)  # warm-up, untimed (oneDNN primitives or cudnn, allocator)
    for _, x, y in trainer.train_split.batches(torch.arange(256), cfg.batch_size, 0, 0):  # and the trainer's
        F.cross_entropy(trainer.model(x.to(device)), y.to(device)).backward()  # model (weights unchanged)
    trainer.optimizer.zero_grad(set_to_none=True)
    if not gpu:  # take turns batch by batch (see the module docstring); on a GPU, whole epochs
        hand_on_after_each_batch(trainer.train_split, "trainer", turns)
        hand_turns = True
    loops = {"trainer": lambda count, e: trainer_epoch(), "hand": hand_epoch}
    if gpu:
        loops["hand + per-step copy"] = lambda count, e: hand_epoch(count, e, copy_losses=True)
    names = list(loops)
    ratios, copy_ratios, rates = [], [], {name: [] for name in names}
    for e in range(epochs):
        count = trainer.dap.subset.numel()
        turns.run({name: functools.partial(loops[name], count, e + 1) for name in (names if e % 2 == 0 else names[::-1])})
        seconds = dict(turns.seconds)
        for name in names:
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
    if gpu and cfg.model == "resnet20" and cfg.batch_size == 512 and cfg.amp == "bf16" and cfg.channels_last:
        rate = statistics.median(rates["trainer"])
        verdict("GPU trainer throughput", rate >= GPU_IMAGES_PER_S,
                f"{rate:.0f} training images/s (target >= {GPU_IMAGES_PER_S} on an H100/H200-class GPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
