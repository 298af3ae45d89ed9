"""Trainer speed: ``droppick train``'s images/s against a minimal hand-written PyTorch loop.

Target: (trainer images/s) / (hand loop images/s) >= 0.95.

Both train small_cnn (same initial weights) on Fashion-MNIST held in memory, batches of 128,
with the same batched crop/flip (``InMemoryImages.batch``), SGD with momentum. The trainer is
``train.Trainer`` with DaP on (``policy="dap"``): an epoch is ``train_epoch`` + ``end_epoch``,
what ``droppick train`` reports as ``epoch_seconds``. The hand loop is the textbook one: a
``randperm`` order, ``F.cross_entropy(reduction="mean")``, backward, step; each epoch it trains
on as many images as the trainer's subset holds that epoch. Epochs alternate (trainer, hand,
hand, trainer, ...) and the verdict is on the median of the per-epoch-pair ratios.

Then one more trainer epoch runs with the profiler of ``droppick train --profile`` on, to show
where an epoch's time goes.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from _common import FASHION_MNIST, header, parse_args, verdict
from droppick.config import TrainConfig
from droppick.seeding import generator
from droppick.train import Trainer, build_seeded_model

TARGET = 0.95


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    header("trainer speed: droppick Trainer vs a minimal PyTorch loop", args.quick)
    n, epochs = (1000, 3) if args.quick else (5000, 8)
    cfg = TrainConfig(dataset="fashion-mnist", data_dir=FASHION_MNIST, model="small_cnn", train_samples=n,
                      test_samples=100, batch_size=128, lr=0.05, policy="dap", epochs=epochs + 1, warmup=1,
                      interval=1, keep=0.9, reuse_at=[], seed=0, device="cpu")
    trainer = Trainer(cfg, torch.device("cpu"))
    images = trainer.train_split.images  # the same uint8 tensor, normalisation and augmentation
    model = build_seeded_model(cfg, trainer.train_split.in_channels, 10)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(1)

    def hand_epoch(count: int, epoch: int) -> None:
        model.train()
        aug = generator(1, epoch, "augment")
        for idx in torch.randperm(n, generator=order_gen)[:count].split(cfg.batch_size):
            x, y = images.batch(idx, aug, padding=cfg.augment_padding, flip=cfg.augment_flip)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def trainer_epoch() -> None:
        trainer.train_epoch(progress=False)
        trainer.dap.end_epoch()

    hand_epoch(256, 0)  # warm-up, untimed (oneDNN primitives, allocator)
    for _, x, y in trainer.train_split.batches(torch.arange(256), cfg.batch_size, 0, 0):  # and the trainer's
        F.cross_entropy(trainer.model(x), y).backward()  # model (no optimiser step: weights unchanged)
    trainer.optimizer.zero_grad(set_to_none=True)
    ratios, rates = [], {"trainer": [], "hand": []}
    for e in range(epochs):
        count = trainer.dap.subset.numel()
        seconds = {}
        for name in (("trainer", "hand") if e % 2 == 0 else ("hand", "trainer")):
            t0 = time.perf_counter()
            trainer_epoch() if name == "trainer" else hand_epoch(count, e + 1)
            seconds[name] = time.perf_counter() - t0
            rates[name].append(count / seconds[name])
        ratios.append(seconds["hand"] / seconds["trainer"])  # = trainer images/s over hand images/s
        print(f"epoch {e + 1}: {count} images each; trainer {count / seconds['trainer']:6.0f} images/s, "
              f"hand loop {count / seconds['hand']:6.0f} images/s, ratio {ratios[-1]:.3f}")
    ratio = statistics.median(ratios)

    prof = trainer.profiler
    prof.enabled = True
    samples = trainer.dap.subset.numel()
    trainer.train_epoch(progress=False)  # starts the profiler's epoch table itself
    trainer.dap.end_epoch()
    prof.lap("dap end_epoch")
    print(prof.report(f"one trainer epoch ({samples} images, batch {cfg.batch_size}, {torch.get_num_threads()} thread(s))",
                      samples=samples))
    print(f"images/s median: trainer {statistics.median(rates['trainer']):.0f}, hand loop "
          f"{statistics.median(rates['hand']):.0f}; ratio per epoch pair "
          f"{', '.join(f'{r:.3f}' for r in ratios)}")
    verdict("trainer speed", ratio >= TARGET, f"median trainer/hand images/s ratio {ratio:.3f} (target >= {TARGET})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
