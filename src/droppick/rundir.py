"""The run directory: resolved config, per-epoch metrics, summary and rotating checkpoints.

Layout::

    RUN_DIR/config.json            the resolved TrainConfig
    RUN_DIR/metrics.jsonl          one JSON object per finished epoch
    RUN_DIR/summary.json           written when the run ends
    RUN_DIR/checkpoint-EEEE.pt     after epoch EEEE; the newest two are kept
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from .checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint

KEEP_CHECKPOINTS = 2
_CHECKPOINT = re.compile(r"checkpoint-(\d{4,})\.pt$")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        found = [(int(m.group(1)), p) for p in self.path.glob("checkpoint-*.pt") if (m := _CHECKPOINT.search(p.name))]
        return [p for _, p in sorted(found)]

    def save_checkpoint(self, state: dict, epoch: int) -> Path:
        path = self.path / f"checkpoint-{epoch:04d}.pt"
        save_checkpoint(state, path)
        for old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            old.unlink()
        return path

    def latest_checkpoint(self) -> Optional[dict]:
        """The newest checkpoint that loads; a corrupt newest one falls back to the one before."""
        errors = []
        for path in reversed(self.checkpoints()):
            try:
                return load_checkpoint(path)
            except ValueError as e:
                errors.append(str(e))
        if errors:
            raise ValueError("no readable checkpoint in " + str(self.path) + ": " + "; ".join(errors))
        return None

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, before_epoch: int) -> list[dict]:
        """Keep the metric lines of epochs < before_epoch (a resumed run redoes the rest)."""
        kept = [m for m in self.read_metrics() if m["epoch"] < before_epoch]
        text = "".join(json.dumps(m) + "\n" for m in kept)
        atomic_write_bytes(self.metrics_path, lambda f: f.write(text.encode()))
        return kept

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def write_summary(self, summary: dict) -> None:
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write_bytes(self.summary_path, lambda f: f.write(text.encode()))
