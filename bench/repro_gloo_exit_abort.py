"""A gloo process aborting at its exit (SIGABRT, 'terminate called without an active exception'):
the smallest reproduction, and the import order that prevents it.

    python bench/repro_gloo_exit_abort.py --mode leak --pairs 200    # some ranks abort
    python bench/repro_gloo_exit_abort.py --mode fixed --pairs 200   # none do
    python bench/repro_gloo_exit_abort.py --mode ddp --mode ddp-fixed --pairs 5   # DDP: the same, by the threads

Each pair is two ranks on this machine; each rank joins a gloo group over env:// (rank 0 hosts the
TCPStore), runs one all_reduce, destroys the group and leaves through the interpreter's normal exit.
``--jobs`` pairs run at once, to load the machine as the test suite does.

What happens (torch 2.14.1, CPython 3.11; the backtrace below is from a core of ``--mode leak``):

1. ``torch.distributed.nn.functional`` binds ``group=group.WORLD`` as the default argument of ten
   functions when it is imported. Imported while a group exists, it keeps that group (a
   ``ProcessGroupGloo``, and on rank 0 the TCPStore server) alive for good: ``destroy_process_group``
   drops torch's own references but the group is never destroyed, so its threads (``gloo_tcp_loop``,
   two ``pt_gloo_runloop``, rank 0's ``pt_tcpstore_uv``) run on into interpreter shutdown. The first
   ``DistributedDataParallel`` of a process imports it (DDP's ``__init__`` touches ``torch._dynamo``,
   which imports FSDP, sharded tensors, then ``torch.distributed.nn``): ``--mode ddp``.
2. A ``pt_gloo_runloop`` thread drops its finished work after the caller has been woken; the work
   holds the collective's tensors, and releasing a tensor that has a Python object takes the GIL.
   If the main thread is already in ``Py_FinalizeEx`` by then, CPython 3.11 ends the thread with
   ``pthread_exit``; the forced unwind meets a ``noexcept`` destructor and libstdc++ calls
   ``std::terminate``::

       #3  abort ()
       #6  std::terminate() ()
       #7  __gxx_personality_v0 ()
       #9  _Unwind_ForcedUnwind ()
       #12 __GI___pthread_exit
       #13 PyThread_exit_thread () at Python/thread_pthread.h:366
       #14 take_gil () at Python/ceval_gil.h:289
       #16 pybind11::gil_scoped_acquire::gil_scoped_acquire()
       #17 torch::detail::ConcretePyInterpreterVTable::decref(_object*) const
       #18 c10::TensorImpl::decref_pyobject() const
       #20 c10d::ProcessGroupGloo::AsyncWork::~AsyncWork()
       #21 c10d::AsyncAllreduceWork::~AsyncAllreduceWork()
       #22 c10d::ProcessGroupGloo::runLoop(int)
       (main thread: PyGC_Collect () <- Py_FinalizeEx () at Python/pylifecycle.c:1830)

   A group that is really destroyed joins its threads inside ``destroy_process_group``, so none is
   left to meet the finalizing interpreter.

Both halves are torch's (and CPython's: 3.14 parks such threads instead of ending them). What a
program can do: import ``torch.distributed.nn`` before it creates its group (the defaults then bind
``None``, "the default group"), which ``droppick.distributed`` does on import (``--mode fixed``); and
leave a finished worker with ``os._exit`` (``droppick.distributed.exit_done``), which skips the
interpreter's shutdown whatever else might still hold a group.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

MODES = {
    "leak": "import torch.distributed.nn after init_process_group",
    "fixed": "import torch.distributed.nn before init_process_group, as droppick.distributed does",
    "ddp": "DistributedDataParallel after init_process_group (it imports torch.distributed.nn)",
    "ddp-fixed": "import torch.distributed.nn first, then DistributedDataParallel",
    "plain": "neither torch.distributed.nn nor DDP",
}


def rank_main(mode: str) -> None:
    """One rank; prints the threads left after destroy_process_group."""
    import datetime

    import torch

    if mode in ("fixed", "ddp-fixed"):
        import torch.distributed.nn  # noqa: F401  (its default arguments bind None: no group exists yet)
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    if mode in ("leak", "fixed"):
        import torch.distributed.nn  # noqa: F401  (after init: binds the live group in ten default arguments)
    if mode in ("ddp", "ddp-fixed"):
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
        del model
    t = torch.ones(4)
    dist.all_reduce(t)
    dist.destroy_process_group()
    names = sorted(open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task"))
    print("threads after destroy_process_group:", " ".join(names), flush=True)


def run_pair(mode: str) -> list[tuple[int, str, str]]:
    """Both ranks of one pair: (exit status, their thread line, the last line of stderr) per rank."""
    port = random.randrange(20000, 32000)
    procs = [subprocess.Popen([sys.executable, __file__, "--rank-of", mode], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=str(port), OMP_NUM_THREADS="1")) for r in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        threads = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("threads")), "?")
        results.append((p.returncode, threads, (err.strip().splitlines() or [""])[-1]))
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=MODES, action="append", help="repeatable (default: leak and fixed)")
    p.add_argument("--pairs", type=int, default=60, help="pairs of ranks per mode (default 60)")
    p.add_argument("--jobs", type=int, default=2, help="pairs running at once (default 2)")
    p.add_argument("--rank-of", choices=MODES, help=argparse.SUPPRESS)  # the child's role
    args = p.parse_args()
    if args.rank_of:
        rank_main(args.rank_of)
        return 0
    for mode in args.mode or ["leak", "fixed"]:
        with ThreadPoolExecutor(args.jobs) as pool:
            ranks = [r for pair in pool.map(lambda _: run_pair(mode), range(args.pairs)) for r in pair]
        status = collections.Counter(code for code, _, _ in ranks)
        threads = collections.Counter(t for code, t, _ in ranks if code == 0)
        aborts = [err for code, _, err in ranks if code == -6]
        print(f"{mode} ({MODES[mode]}): {len(ranks)} ranks, {status.get(0, 0)} exited 0, {len(aborts)} SIGABRT, "
              f"{len(ranks) - status.get(0, 0) - len(aborts)} other {dict(status)}", flush=True)
        for t, n in threads.most_common():
            print(f"    {n} ranks left with threads: {t}", flush=True)
        for err in sorted(set(aborts)):
            print(f"    SIGABRT stderr: {err}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
