"""Drop-and-Pick in a PyTorch Lightning training, on one process or under DDP.

    python examples/lightning_dap.py --out /tmp/dap-lightning
    torchrun --nproc_per_node 2 examples/lightning_dap.py --devices 2 --strategy ddp --out /tmp/dap-lightning

A synthetic 3-class problem (so it runs anywhere in seconds); every rank writes the subset each
epoch trained on to OUT/subsets-rank{R}.json, so the ranks can be compared (tests/test_lightning.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from droppick import DaPSchedule, IndexedDataset, distributed
from droppick.integrations.lightning import DropAndPickCallback


class Model(pl.LightningModule):
    def __init__(self, callback: DropAndPickCallback, train_set, batch_size: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, 3))
        self.callback, self.train_set, self.batch_size = callback, train_set, batch_size

    def training_step(self, batch, batch_idx):
        indices, x, y = batch  # IndexedDataset puts the index first
        losses = F.cross_entropy(self.net(x), y, reduction="none")
        return {"loss": losses.mean(), "sample_losses": losses}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(IndexedDataset(self.train_set), batch_size=self.batch_size, sampler=self.callback.sampler())


class SubsetLog(pl.Callback):
    """The subset each epoch trained on (read at the epoch's start, before any decision)."""

    def __init__(self):
        self.subsets: list[list[int]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.subsets.append(pl_module.callback.dap.subset.tolist())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto")
    p.add_argument("--samples", type=int, default=301)  # odd: under DDP the shards are padded
    args = p.parse_args()

    pl.seed_everything(0, verbose=False)
    gen = torch.Generator().manual_seed(0)
    train_set = TensorDataset(torch.randn(args.samples, 1, 8, 8, generator=gen),
                              torch.randint(0, 3, (args.samples,), generator=gen))
    schedule = DaPSchedule(epochs=6, warmup=1, interval=1, keep=0.7, active=None, reuse_at=[4])
    cb = DropAndPickCallback(num_samples=len(train_set), schedule=schedule, policy="dap", seed=0)
    log = SubsetLog()
    trainer = pl.Trainer(max_epochs=schedule.epochs, callbacks=[cb, log], use_distributed_sampler=False,
                         accelerator="cpu", devices=args.devices, strategy=args.strategy, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Model(cb, train_set, batch_size=32))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"subsets-rank{trainer.global_rank}.json").write_text(json.dumps(
        {"subsets": log.subsets, "final": cb.dap.subset.tolist(), "compute_fraction": cb.dap.compute_fraction,
         "planned": cb.dap.plan().compute_fraction, "world_size": trainer.world_size}))
    if torch.distributed.is_initialized():  # destroy the group and leave without the interpreter's
        distributed.exit_done()  # teardown, which can abort a finished worker (see its docstring)


if __name__ == "__main__":
    main()
