"""torch.compile with a shrinking epoch: how many compilations does ``--compile`` cost?

Target: one compilation for the whole run, however the subset size (and so the size of each
epoch's last, partial batch) changes; none per epoch.

``droppick train --compile`` compiles the training module with ``dynamic=False`` and sends only
full batches through it; an epoch's last partial batch runs eagerly. Counted here with
Dynamo's own counter (``torch._dynamo.utils.counters["stats"]["unique_graphs"]``) after every
epoch of a DaP run whose subset shrinks each epoch, so every epoch ends on a different
partial-batch size. For contrast, the naive wiring (every batch through the compiled module)
is counted on the same schedule; it is counted with Dynamo's ``backend="eager"``, which runs
the same guards and recompiles on the same shapes but skips Inductor's code generation.

The full run also compares the speed of the compiled trainer with the eager one (epochs
interleaved, median of per-epoch ratios). ``--quick`` counts with ``backend="eager"`` only.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from _common import FASHION_MNIST, header, parse_args, verdict
from droppick.train.config import TrainConfig
from droppick.train.trainer import Trainer


def graphs() -> int:
    return int(counters["stats"]["unique_graphs"])


def run(cfg: TrainConfig, mode: str, epochs: int, eager_twin: Trainer | None = None) -> tuple[list[int], list[float]]:
    """Compilations after each epoch; with ``eager_twin``, also compiled/eager images/s ratios."""
    torch._dynamo.reset()
    counters.clear()
    t = Trainer(cfg, torch.device("cpu"))
    if mode != "inductor":  # emulate --compile (or the naive wiring) with Dynamo's eager backend
        t.compiled = torch.compile(t.net, dynamic=False, backend="eager")
    if mode == "naive":
        t.net = t.compiled  # every batch, partial ones included, through the compiled module
    per_epoch, ratios = [], []
    for e in range(epochs):
        size = t.dap.subset.numel()
        t0 = time.perf_counter()
        t.train_epoch(progress=False)
        compiled_s = time.perf_counter() - t0
        t.dap.end_epoch()
        per_epoch.append(graphs())
        line = f"  epoch {e + 1}: subset {size:5d}, last batch {size % cfg.batch_size or cfg.batch_size:3d}: " \
               f"{per_epoch[-1]} compilation(s) so far; {compiled_s:6.1f} s"
        if eager_twin is not None:
            t0 = time.perf_counter()
            eager_twin.train_epoch(progress=False)
            eager_s = time.perf_counter() - t0
            eager_twin.dap.end_epoch()
            if e > 0:  # the first compiled epoch includes the compilation itself
                ratios.append(eager_s / compiled_s)
            line += f" (eager trainer {eager_s:.1f} s)"
        print(line)
    return per_epoch, ratios


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    header("torch.compile: compilations across epochs of different subset sizes", args.quick)
    n, epochs = (700, 4) if args.quick else (2000, 5)
    cfg = TrainConfig(dataset="fashion-mnist", data_dir=FASHION_MNIST, model="small_cnn", train_samples=n,
                      test_samples=100, batch_size=128, policy="dap", epochs=epochs, warmup=0, interval=1,
                      keep=0.9, reuse_at=[], seed=0, device="cpu", compile=not args.quick)
    print(f"subset sizes: {list(cfg.schedule.plan(n).subset_sizes)} (batch {cfg.batch_size})")
    if args.quick:
        print("droppick's wiring (backend='eager' stand-in for Inductor):")
        ours, _ = run(cfg, "eager", epochs)
    else:
        print("droppick train --compile (Inductor), against an eager trainer:")
        eager_cfg = TrainConfig(**{**cfg.to_dict(), "compile": False})
        t0 = time.perf_counter()
        ours, ratios = run(cfg, "inductor", epochs, eager_twin=Trainer(eager_cfg, torch.device("cpu")))
        print(f"  compiled / eager images/s, epochs after the first: median {statistics.median(ratios):.3f} "
              f"({', '.join(f'{r:.2f}' for r in ratios)}); whole section {time.perf_counter() - t0:.0f} s "
              f"including the compilation")
    print("naive wiring (every batch compiled; backend='eager'):")
    naive, _ = run(cfg, "naive", epochs)
    print(f"compilations: droppick {ours[-1]} (after each epoch {ours}); naive {naive[-1]} (after each epoch {naive})")
    verdict("compile recompilations", ours[-1] == 1 and len(set(ours)) == 1,
                  f"{ours[-1]} compilation(s) over {epochs} epochs of different sizes (target 1, no recompilation "
                  f"per epoch); the naive wiring compiles {naive[-1]} times")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
