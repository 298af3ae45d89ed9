"""cuDNN autotuning of new batch shapes: what a shrinking subset's odd last batch costs on a GPU.

Informational (no target). DaP's subset changes size every epoch, so the last batch of each
epoch has a size the run has not seen. With ``torch.backends.cudnn.benchmark = True`` cuDNN
autotunes every convolution again for that shape. This times, for ResNet-20 on 28x28 inputs,
one forward + backward of a batch of a never-seen size, with benchmark on and off, against a
steady full batch of 128. The trainer tunes only full batches (``train.process.cudnn_tuning``).
Needs CUDA.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from _common import header, parse_args
from droppick.models import build_model


def step_seconds(model: torch.nn.Module, size: int) -> float:
    x = torch.randn(size, 1, 28, 28, device="cuda")
    y = torch.randint(0, 10, (size,), device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    F.cross_entropy(model(x), y).backward()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    header("cuDNN autotuning of never-seen batch sizes (ResNet-20, 28x28)", args.quick)
    if not torch.cuda.is_available():
        print("SKIP: needs CUDA")
        return 0
    model = build_model("resnet20", num_classes=10, in_channels=1).cuda()
    sizes = iter(range(1, 128, 2))  # each size used once: always a new shape
    rounds = 3 if args.quick else 8
    torch.backends.cudnn.benchmark = True
    for _ in range(5):
        step_seconds(model, 128)
    steady = statistics.median(step_seconds(model, 128) for _ in range(20))
    new = {True: [], False: []}
    for r in range(rounds):
        for bench in ((True, False) if r % 2 == 0 else (False, True)):
            torch.backends.cudnn.benchmark = bench
            new[bench].append(step_seconds(model, next(sizes)))
    on, off = statistics.median(new[True]), statistics.median(new[False])
    print(f"steady batch of 128 (tuned): {1000 * steady:.1f} ms per forward + backward")
    print(f"a never-seen batch size, cudnn.benchmark on:  {1000 * on:.1f} ms (median of {rounds})")
    print(f"a never-seen batch size, cudnn.benchmark off: {1000 * off:.1f} ms (median of {rounds})")
    print(f"one new shape with benchmark on costs {on / steady:.1f} steady steps; off, {off / steady:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
