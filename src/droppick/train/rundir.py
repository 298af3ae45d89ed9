"""The run directory: resolved config, per-epoch metrics, summary and rotating checkpoints.

Layout::

    RUN_DIR/config.json            the resolved TrainConfig
    RUN_DIR/metrics.jsonl          one JSON object per finished epoch
    RUN_DIR/summary.json           written when the run ends
    RUN_DIR/checkpoint-EEEE.pt     after epoch EEEE; the newest two are kept
    RUN_DIR/checkpoint-EEEE.pt.sha256  its SHA-256 (sha256sum format), checked on load
    RUN_DIR/dap-shard-EEEE-R-of-W.pt   with shard_state: rank R of W's DaP state after epoch EEEE (+ .sha256);
                                   checkpoint-EEEE.pt names them (train/dap_state.py)
    RUN_DIR/nonfinite.jsonl        with exclude_nonfinite: the samples excluded after each epoch
    RUN_DIR/unreadable.jsonl       with skip_unreadable: the images that could not be read, per epoch
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path
from typing import Optional

from ..atomic import atomic_write_text
from .checkpoint import digest_path, load_checkpoint, save_checkpoint
from .config import TrainConfig, training_differences

KEEP_CHECKPOINTS = 2


class RunWriteError(OSError):
    """A write into the run directory failed (a full disk, a lost mount): what was saved before is intact."""
_CHECKPOINT = re.compile(r"checkpoint-(\d{4,})\.pt$")
_DAP_SHARD = re.compile(r"dap-shard-(\d{4,})-(\d+)-of-(\d+)\.pt$")


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
    def nonfinite_path(self) -> Path:
        return self.path / "nonfinite.jsonl"

    @property
    def unreadable_path(self) -> Path:
        return self.path / "unreadable.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def check_new(self) -> None:
        """A new run may start only in a new or empty directory: a directory holding anything
        (a run, or files of the user's own) is refused, so nothing is overwritten."""
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"--out {self.path} is a file; choose a new or empty directory")
        if self.path.is_dir():
            found = sorted(p.name for p in self.path.iterdir())
            if found:
                shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
                hint = (f"to continue the run it holds, use --resume {self.path}" if "config.json" in found
                        else "choose a new or empty directory for --out")
                raise FileExistsError(f"{self.path} is not empty (it holds {shown}): droppick writes a new run only "
                                      f"into a new or empty directory; {hint}")

    def resumes(self, cfg: TrainConfig) -> bool:
        """``--auto-resume``: whether ``cfg`` continues the run in this directory (True) or starts
        one in it (False), so that one command line serves the first start and every restart.

        A new or empty directory starts the run. A directory holding this run's config.json
        continues it from its newest checkpoint, or starts it again when it died before its first
        checkpoint (what is there then is droppick's own: config, empty metrics, a stale lock).
        A directory holding another run's config, or files droppick did not write, is refused as
        for a new run. "This run" means equal in every key a resume may not change
        (``RESUME_MAY_CHANGE``: where the data lives, how it is read or reported).
        """
        if not self.config_path.exists():
            self.check_new()
            return False
        saved, given = TrainConfig.load(self.config_path).to_dict(), cfg.to_dict()
        differ = training_differences(saved, given)
        if differ:
            shown = ", ".join(f"{k}={saved.get(k)!r} (this command: {given[k]!r})" for k in differ[:4])
            raise FileExistsError(
                f"{self.path} holds another run: its config.json has {shown}{' and more' if len(differ) > 4 else ''}. "
                f"--auto-resume continues only the run this command line started: choose another --out, or "
                f"continue that run with droppick train --resume {self.path}")
        return self.summary_path.exists() or bool(self.checkpoints())  # finished, or stopped after a checkpoint

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        found = [(int(m.group(1)), p) for p in self.path.glob("checkpoint-*.pt") if (m := _CHECKPOINT.search(p.name))]
        return [p for _, p in sorted(found)]

    @contextlib.contextmanager
    def writing(self, what: str):
        """Turn an OSError while writing ``what`` into a RunWriteError that says what to do.
        Checkpoints and config are replaced atomically and metrics are appended, so a failed write
        leaves every earlier checkpoint and metrics row readable."""
        try:
            yield
        except OSError as e:
            raise RunWriteError(e.errno, f"cannot write {what} in {self.path}: {e.strerror or e}. Everything saved "
                                f"before is intact: free space (or fix the disk), then continue with "
                                f"droppick train --resume {self.path}") from e

    def dap_shard_path(self, epoch: int, rank: int, world: int) -> Path:
        """Where rank ``rank`` of ``world`` writes its shard of a sharded DaP state after ``epoch``."""
        return self.path / f"dap-shard-{epoch:04d}-{rank}-of-{world}.pt"

    def save_checkpoint(self, state: dict, epoch: int) -> Path:
        """Write ``state`` as checkpoint-EEEE.pt (its DaP shards, if any, are in place already), then
        remove the checkpoints beyond the newest two and the DaP shards no checkpoint kept names."""
        path = self.path / f"checkpoint-{epoch:04d}.pt"
        with self.writing(f"checkpoint {path.name}"):
            save_checkpoint(state, path)
        for old in self.checkpoints()[:-KEEP_CHECKPOINTS]:
            old.unlink()
            digest_path(old).unlink(missing_ok=True)
        kept = {int(_CHECKPOINT.search(p.name).group(1)) for p in self.checkpoints()}
        named = set(_shard_files(state))  # this epoch's: not those of a killed attempt in another world size
        for shard in self.path.glob("dap-shard-*.pt"):
            m = _DAP_SHARD.search(shard.name)
            if m and (int(m.group(1)) not in kept or (int(m.group(1)) == epoch and shard.name not in named)):
                shard.unlink()
                digest_path(shard).unlink(missing_ok=True)
        return path

    def latest_checkpoint(self) -> Optional[dict]:
        """The newest checkpoint that loads; a corrupt newest one falls back to the one before."""
        found = self.latest_checkpoint_and_path()
        return None if found is None else found[1]

    def latest_checkpoint_and_path(self) -> Optional[tuple[Path, dict]]:
        """(path, state) of the newest checkpoint that loads, or None when there is none."""
        errors = []
        for path in reversed(self.checkpoints()):
            try:
                state = load_checkpoint(path)
            except ValueError as e:
                errors.append(str(e))
                continue
            missing = [f for f in _shard_files(state) if not (self.path / f).is_file()]
            if not missing:
                return path, state
            errors.append(f"{path.name} names DaP shards that are missing: {', '.join(missing)}")
        if errors:
            raise ValueError("no readable checkpoint in " + str(self.path) + ": " + "; ".join(errors))
        return None

    def read_metrics(self) -> list[dict]:
        return _read_jsonl(self.metrics_path)

    def truncate_metrics(self, before_epoch: int) -> list[dict]:
        """Keep the metric (and nonfinite.jsonl) lines of epochs < before_epoch: a resumed run
        redoes the rest."""
        for path in (self.nonfinite_path, self.unreadable_path):
            if path.exists():
                _truncate_jsonl(path, before_epoch)
        return _truncate_jsonl(self.metrics_path, before_epoch)

    def append_metrics(self, row: dict) -> None:
        with self.writing(f"the metrics of epoch {row['epoch']}"):
            _append_jsonl(self.metrics_path, row)

    def append_nonfinite(self, epoch: int, indices: list[int]) -> None:
        with self.writing(f"the non-finite samples of epoch {epoch}"):
            _append_jsonl(self.nonfinite_path, {"epoch": epoch, "indices": indices})

    def count_listed(self, path: Path) -> int:
        """Samples listed in nonfinite.jsonl or unreadable.jsonl (0 without the file)."""
        return sum(len(row["indices"]) for row in _read_jsonl(path))

    def append_unreadable(self, epoch: int, indices: list[int], paths: list[str]) -> None:
        with self.writing(f"the unreadable images of epoch {epoch}"):
            _append_jsonl(self.unreadable_path, {"epoch": epoch, "indices": indices, "paths": paths})

    @property
    def label_noise_path(self) -> Path:
        return self.path / "label_noise.json"

    def write_label_noise(self, train_flipped: list[int], val_flipped: list[int]) -> None:
        """--label-noise's record: ``flipped``, the training indices (as the run's samples are
        numbered) whose label was changed, and ``val_flipped``, those of the validation split."""
        with self.writing("label_noise.json"):
            atomic_write_text(self.label_noise_path, json.dumps({"flipped": train_flipped, "val_flipped": val_flipped}) + "\n")

    def write_summary(self, summary: dict) -> None:
        with self.writing("summary.json"):
            atomic_write_text(self.summary_path, json.dumps(summary, indent=2) + "\n")


def _shard_files(state: dict) -> list[str]:
    """The DaP shard files a checkpoint names (with shard_state; none otherwise)."""
    dap = state.get("dap")
    return list(dap.get("shard_files", ())) if isinstance(dap, dict) else []


def _read_jsonl(path: Path) -> list[dict]:
    """The JSON lines of ``path``; a last line cut short by a crash mid-append is ignored."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines = lines[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def _truncate_jsonl(path: Path, before_epoch: int) -> list[dict]:
    kept = [row for row in _read_jsonl(path) if row["epoch"] < before_epoch]
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
    return kept


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def code_version() -> dict:
    """What trained a run: droppick's version, its git commit when it runs from a checkout (and
    whether tracked files differed from it), and torch's version. For summary.json."""
    import torch

    from ..version import installed_version

    here, commit, dirty = Path(__file__).resolve().parent, None, None
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            commit = head.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=10)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):  # no git, or a slow file system: the version still says much
        pass
    return {"droppick": installed_version(), "git_commit": commit, "git_dirty": dirty, "torch": torch.__version__}
