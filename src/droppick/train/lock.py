"""One process per run directory: a lock file held for the life of a run.

``RUN_DIR/.lock`` holds the holder's PID, host and start time. It is created with O_EXCL, so of
two processes starting on the same directory one wins and the other is refused with a message
naming the holder. A lock left by a process that no longer exists (killed, or its machine
rebooted) is stale: on the same host the PID is checked and a dead holder's lock is taken over.
On another host liveness cannot be checked, so the message says how to remove it by hand, unless
the lock was taken by an earlier attempt of the same SLURM job (``SLURM_JOB_ID``, which a
requeued job keeps): SLURM ends a job everywhere before it starts it again, so that holder is gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockError(FileExistsError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _slurm_job() -> str | None:
    return os.environ.get("SLURM_JOB_ID")


class RunLock:
    """``with RunLock(run_dir):`` holds the directory's lock; it is removed on exit."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "job": _slurm_job()}
        for _ in range(2):  # a second try after taking over a stale lock
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if not self._stale(holder):
                    raise RunLockError(self._refusal(holder)) from None
                # Rename, then create: of two processes taking over at once only one renames it.
                try:
                    os.rename(self.path, self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}"))
                except FileNotFoundError:
                    pass
                else:
                    self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}").unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise RunLockError(self._refusal(self._holder()))

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # being written this instant, or damaged: treated as held

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return holder.get("job") is not None and holder.get("job") == _slurm_job()  # this job, requeued
        return isinstance(holder.get("pid"), int) and not _alive(holder["pid"])

    def _refusal(self, holder: dict) -> str:
        who = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
        advice = ("wait for it to finish or stop it" if holder.get("host") == socket.gethostname() else
                  f"if that process is gone (its machine is not this one, so droppick cannot check), delete {self.path}")
        return f"{self.path.parent} is in use by {who} since {since} (lock file {self.path}): {advice}"
