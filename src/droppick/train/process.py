"""Process-wide settings the trainer changes for a while and restores: the SIGTERM handler and cuDNN autotuning."""

from __future__ import annotations

import contextlib
import signal
import threading

import torch


@contextlib.contextmanager
def sigterm_exits():
    """SIGTERM (SLURM preempting a job, torchrun stopping the other workers) ends the run as an
    exception would, so ``finally`` releases the lock: the requeued job, maybe on another host,
    then finds no lock to refuse it. Only in the main thread, and the caller's handler comes back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def cudnn_tuning(allowed: bool):
    """cuDNN autotuning (``cudnn.benchmark``) only where ``allowed``: for full batches.

    A shrinking subset gives the last batch of almost every epoch a size never seen before, and
    cuDNN autotunes each new shape: about 2 s for a ResNet-20 on an H100, some 220 steady steps,
    against 36 ms for that batch untuned (bench/cudnn_new_shapes.py). Tuning it made DaP's epochs
    cost ~2 s more than their subset size explains, so its wall-clock savings lagged its compute.
    """
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = saved and allowed
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved
