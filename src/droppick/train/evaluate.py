"""``droppick eval``: a saved checkpoint's top-1 and top-5 on its run's test split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .. import distributed
from .checkpoint import load_checkpoint
from .config import TrainConfig
from .trainer import Trainer


def evaluate_checkpoint(path: str | Path, data_dir: Optional[str] = None) -> dict:
    """Top-1/top-5 accuracy and error of a saved checkpoint on its run's test split."""
    checkpoint = load_checkpoint(path)
    cfg = TrainConfig.from_dict(checkpoint["config"] | ({"data_dir": data_dir} if data_dir else {}))
    t = Trainer(cfg, distributed.setup_from_env(cfg.device))
    t.model.load_state_dict(checkpoint["model"])
    top1, top5, balanced = t.evaluate()
    return {"checkpoint": str(path), "epoch": checkpoint["epoch"], "model": cfg.model, "top1": top1, "top5": top5,
            "balanced_top1": balanced, "top1_err": 100.0 - top1, "top5_err": 100.0 - top5}
