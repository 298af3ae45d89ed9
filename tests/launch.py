"""Starting several processes from a test: a free port, and torchrun with one thread each."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys

TIMEOUT_S = 240  # a hang (a rank waiting for another that died) fails the test instead of the suite


def free_port() -> int:
    """A port free now, below Linux's ephemeral range (32768-60999), which gloo's connections and
    every client socket draw from: a port taken from that range could be handed to another test's
    socket before the launcher binds it. Not 29500, torchrun's default, which other tests use."""
    rng = random.Random()  # the global RNG stays the tests' own
    while True:
        port = rng.randrange(20000, 32768)
        if port == 29500:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def torchrun(args: list[str], nproc: int = 2, **env) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node NPROC ARGS...`` on this machine's CPU."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    return run_group(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", **env))


def run_group(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a process group of its own: on a hang the launcher *and* the workers it
    started are killed (killing the launcher alone would leave them running after the test)."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          **kw) as proc:
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _then_leave(rank: int, worker, *args) -> None:
    """Run the worker, then leave as droppick's own torchrun workers do (``distributed.exit_done``):
    a gloo process's interpreter teardown aborted now and then (SIGABRT) after its work was done
    (torch's doing: bench/repro_gloo_exit_abort.py). A worker that raises still fails the way spawn
    reports it."""
    from droppick.distributed import exit_done

    worker(rank, *args)
    exit_done()


def spawn(worker, args: tuple, nprocs: int = 2) -> None:
    """Run ``worker(rank, *args)`` in ``nprocs`` spawned processes; a hang fails the test."""
    import time

    import pytest
    import torch.multiprocessing as mp

    ctx = mp.start_processes(_then_leave, args=(worker, *args), nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{nprocs} spawned workers did not finish within {TIMEOUT_S} s")
