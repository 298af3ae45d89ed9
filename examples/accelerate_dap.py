"""Drop-and-Pick in a Hugging Face Accelerate training loop.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples/accelerate_dap.py --out /tmp/dap-acc
    accelerate launch --multi_gpu --num_processes 2 examples/accelerate_dap.py --out /tmp/dap-acc    # 2 GPUs
    python examples/accelerate_dap.py --out /tmp/dap-acc                   # one process

The one rule: do not pass the DaP loader to ``accelerator.prepare``. Accelerate would re-shard it
with its own sampler, while the DaP sampler already gives each rank its shard of the current
subset (it reads the rank from torch.distributed, which Accelerate has initialised), and
``dap.end_epoch()`` merges every rank's losses so all ranks keep the same subset. The model and
optimiser are prepared as usual. Every rank writes OUT/subsets-rank{R}.json (tests/test_accelerate.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from droppick import DaPSchedule, DropAndPick, IndexedDataset, distributed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    args = p.parse_args()

    accelerator = Accelerator()
    gen = torch.Generator().manual_seed(0)
    train_set = TensorDataset(torch.randn(301, 64, generator=gen), torch.randint(0, 3, (301,), generator=gen))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)  # not the loader: the DaP sampler shards by rank

    schedule = DaPSchedule(epochs=6, warmup=1, interval=1, keep=0.7, active=None, reuse_at=[4])
    dap = DropAndPick(num_samples=len(train_set), schedule=schedule, policy="dap", seed=0)
    loader = DataLoader(IndexedDataset(train_set), batch_size=32, sampler=dap.sampler())
    subsets = []
    for _ in range(schedule.epochs):  # dap.epoch counts them
        subsets.append(dap.subset.tolist())
        model.train()
        for indices, x, y in loader:
            x, y = x.to(accelerator.device), y.to(accelerator.device)
            losses = F.cross_entropy(model(x), y, reduction="none")
            dap.record(indices, losses)  # the loader's CPU indices
            accelerator.backward(losses.mean())
            optimizer.step()
            optimizer.zero_grad()
        dap.end_epoch()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"subsets-rank{accelerator.process_index}.json").write_text(json.dumps(
        {"subsets": subsets, "compute_fraction": dap.compute_fraction, "world_size": accelerator.num_processes}))
    accelerator.end_training()  # destroys the process group
    if accelerator.num_processes > 1:  # and leaves without the interpreter's teardown, which can abort
        distributed.exit_done()        # a finished worker (see droppick.distributed.exit_done)


if __name__ == "__main__":
    main()
