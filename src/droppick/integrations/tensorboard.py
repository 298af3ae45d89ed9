"""The trainer's per-epoch scalars as a TensorBoard event file (``droppick train --tensorboard``).

Written under ``RUN_DIR/tensorboard/``, one point per epoch (the step is the 1-based epoch), so
``tensorboard --logdir runs/`` shows every run of a folder side by side (``droppick compare``'s
runs live in ``OUT/runs/``). A resumed run purges the points at and after the epoch it restarts
from, so the epochs a killed process wrote past its last checkpoint are not shown twice.
"""

from __future__ import annotations

from pathlib import Path

# metrics-row key -> TensorBoard tag
SCALARS = {"train_loss": "train/loss", "test_top1": "test/top1", "test_top5": "test/top5", "lr": "train/lr",
           "subset_size": "dap/subset_size", "compute_fraction": "dap/compute_fraction",
           "epoch_seconds": "time/epoch_seconds"}


class EpochWriter:
    def __init__(self, log_dir: str | Path, first_epoch: int):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("--tensorboard needs the tensorboard package: pip install 'droppick[tensorboard]'") from err
        self.writer = SummaryWriter(str(log_dir), purge_step=first_epoch if first_epoch > 1 else None)

    def write(self, row: dict) -> None:
        for key, tag in SCALARS.items():
            if row[key] is not None:  # test accuracy of an epoch --eval-every skipped
                self.writer.add_scalar(tag, row[key], global_step=row["epoch"])
        self.writer.flush()  # a reader sees each epoch as soon as it is checkpointed

    def close(self) -> None:
        self.writer.close()
