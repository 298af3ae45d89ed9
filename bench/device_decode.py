"""ImageFolder decoding: Pillow in the workers (--decode workers) against the device (--decode device).

Both read the same generated JPEG set (3,000 images of 320 px on a GPU, 1,000 of 192 px on the
CPU) through the run's one persistent DataLoader with the same number of workers, crop and flip
each image (to 224 px on a GPU, 160 on the CPU, 112 with --quick) as the trainer does, and
deliver normalised float batches on the training device; the epochs alternate between the
two (A B, then B A) and every batch is consumed without a model, so the figure is the data
path's alone. On a GPU the target is that decoding there is at least as fast as the workers
(which then only read bytes); on the CPU the device is the main process, so there is no target
and the line says so.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import torch

from _common import header, interleave, median_ratio, parse_args, spread, verdict
from droppick.data.datasets import write_fake_imagefolder
from droppick.train.splits import build_splits
from droppick.train.config import TrainConfig

BATCH = 128  # images per batch


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--device", default="cpu"))
    header(f"ImageFolder decoding on {args.device}: workers vs device", args.quick)
    device = torch.device(args.device)
    # ImageNet-like sizes on a GPU; on this CPU (one worker) a smaller set keeps the run near a minute.
    per_class, size, crop, rounds = ((30, 128, 112, 2) if args.quick else
                                     (300, 320, 224, 4) if device.type == "cuda" else (100, 192, 160, 3))
    workers = max(1, min(8, (os.cpu_count() or 2) - 1))  # leave the main process a core
    root = Path(tempfile.mkdtemp(prefix="droppick-bench-decode-"))
    write_fake_imagefolder(root, classes=10, per_class=per_class, size=size, split_names=("train",))
    write_fake_imagefolder(root, classes=10, per_class=1, size=size, split_names=("val",))  # unused, but required
    splits = {mode: build_splits(TrainConfig(dataset="imagefolder", data_dir=str(root), image_size=crop,
                                             eval_resize=size, num_workers=workers, decode=mode,
                                             device=args.device), pin_memory=device.type == "cuda",
                                 device=device)[0]
              for mode in ("workers", "device")}
    n = len(splits["workers"])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    print(f"{n} JPEGs of {size}x{size}, {workers} workers, batch {BATCH}, RandomResizedCrop {crop} + flip + "
          f"normalise, batches delivered on {device}; {rounds} epochs each, alternating")

    epoch_numbers = {mode: itertools.count(1) for mode in splits}  # each epoch draws new crops, as in training

    def epoch(mode: str):
        def run():
            for _, images, _ in splits[mode].batches(order, BATCH, 0, next(epoch_numbers[mode])):
                images.to(device, non_blocking=True)  # a no-op for the device's batches; the workers' are copied
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run

    epoch("workers")(), epoch("device")()  # warm-up: worker start, decoder libraries, CUDA context
    times = interleave({mode: epoch(mode) for mode in ("workers", "device")}, rounds)
    rate = {mode: n / min(seconds) for mode, seconds in times.items()}
    ratio = 1 / median_ratio(times["device"], times["workers"])
    print(f"images/s: workers {rate['workers']:.0f}, device {rate['device']:.0f} (best epoch of each); "
          f"device/workers speed {ratio:.3f} ({spread(times['workers'], times['device'])})")
    if device.type != "cuda":
        print("INFO no target on the CPU: the 'device' is the main process, decoding beside the training step")
        return 0
    ok = verdict("device decoding at least as fast as the workers", ratio >= 1.0,
                 f"speed ratio {ratio:.3f} with {workers} workers (target >= 1.0)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
