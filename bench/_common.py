"""Shared helpers for the benchmarks: machine facts, interleaved A/B timing, verdict lines.

The machine these run on is shared, so absolute seconds drift by tens of percent from one
minute to the next. Every comparison here therefore runs its variants interleaved (A B, then
B A, ...) in one process, and reports the median of the per-round ratios: drift that lasts
longer than a round cancels.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
# $DROPPICK_DATA/fashion-mnist when set (as the library reads it), else Debian's location
FASHION_MNIST = os.path.join(os.environ.get("DROPPICK_DATA", "/usr/share/datasets"), "fashion-mnist")


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None,
               malloc: str = "steady"):
    """--quick, --threads (default 1, applied here: see THREADS_NOTE) and --malloc (default
    ``malloc``, applied here: see steady_malloc)."""
    import torch

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a much smaller run (seconds), for smoke tests")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--malloc", choices=("steady", "glibc"), default=malloc,
                   help="steady: keep freed memory in the process (default, see steady_malloc); glibc: its defaults")
    if extra:
        extra(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.malloc == "steady":
        _allocator[0] = steady_malloc()
    return args


_allocator = ["malloc defaults"]  # what parse_args did to the allocator, for the header line


# glibc's malloc hands each training step's large buffers (activations of a few MB) back to the
# kernel and page-faults them in again on the next step, at a cost that depends on the thread's
# arena and the heap's history: two identical trainers in one process ran 3-12 % apart, whichever
# was built first being faster, and that difference swamped the ratios measured here. Keeping
# freed memory in the process (no mmap for big blocks, no trimming, one arena) removed the
# difference (0.97-1.04, no sign) and made every step faster; jemalloc or tcmalloc do the same.
# It changes the allocator for every variant of a comparison alike; droppick itself sets nothing.
_MALLOPT = {"M_TRIM_THRESHOLD": (-1, 1 << 40), "M_MMAP_THRESHOLD": (-3, 1 << 30), "M_ARENA_MAX": (-8, 1)}


@functools.lru_cache(maxsize=None)  # once per process; later calls return the note
def steady_malloc() -> str:
    """Apply ``_MALLOPT`` to this process (and the DataLoader workers it forks); returns what was done."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = [name for name, (option, value) in _MALLOPT.items() if libc.mallopt(option, value) == 1]
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        applied = []
    return "glibc mallopt " + ", ".join(applied) if applied else "allocator left as it is (no glibc mallopt)"


# On this shared 2-core machine (other processes keep the load average at 3-6), two OpenMP
# threads spend most of their time waiting for each other at barriers: a small_cnn step took
# 540-610 ms with 2 threads and 180-250 ms with 1 (125 ms of CPU). One thread is also far
# steadier, so the benchmarks default to it; the ratios they report compare like with like.
THREADS_NOTE = "1 torch thread by default (see bench/_common.py)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    import torch

    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    return {"date": date, "nproc": os.cpu_count(), "cpu": cpu_model(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def header(title: str, quick: bool) -> None:
    m = machine()
    print(f"# {title}{' (--quick)' if quick else ''}")
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    print(f"command: python {' '.join([script, *sys.argv[1:]])}")
    print(f"machine: {m['date']}; nproc {m['nproc']}; {m['cpu']}; torch {m['torch']} "
          f"({m['torch_threads']} threads); python {m['python']}; load average {m['load_avg_1m']}; {_allocator[0]}"
          + (f"; GPU {m['gpu']}" if m["gpu"] else ""))


def interleave(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each call of each variant, ``rounds`` times, alternating the order each round."""
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    return times


class TakeTurns:
    """Run jobs in threads that take turns: one runs until it calls ``turn(name)``, then the next.

    For comparisons whose unit (a training epoch, 20 s here) is longer than this machine's
    slow spells (identical work runs 10-15 % slower for a second or two, see bench/README.md):
    with a turn per batch, a slow spell falls on every job alike. ``seconds[name]`` sums the
    job's turns; only one job runs at a time, so a turn is its own work, nothing else's.
    A job that never calls ``turn`` runs to its end in one go (plain A B interleaving).
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._order: list[str] = []  # the jobs still running, in turn order
        self._current: str | None = None
        self._since = self._cpu_since = 0.0
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # the process's CPU time during the job's turns

    def run(self, jobs: dict[str, Callable[[], object]]) -> dict[str, object]:
        """Run every job to its end, the first one first; returns their results by name."""
        self._order, self._current = list(jobs), next(iter(jobs))
        self.seconds, self.cpu_seconds = dict.fromkeys(jobs, 0.0), dict.fromkeys(jobs, 0.0)
        results, errors = {}, []

        def body(name: str, job: Callable[[], object]) -> None:
            with self._cond:
                self._cond.wait_for(lambda: self._current == name)
            try:
                results[name] = job()
            except BaseException as err:  # re-raised below, in the caller's thread
                errors.append(err)
            finally:
                with self._cond:
                    self._pass(name, leave=True)

        threads = [threading.Thread(target=body, args=item) for item in jobs.items()]
        self._since, self._cpu_since = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results

    def turn(self, name: str) -> None:
        """Called by job ``name`` between two units of its work: let the next job run one (outside
        ``run``, e.g. an extra epoch with the profiler, it does nothing)."""
        with self._cond:
            if name not in self._order:
                return
            self._pass(name, leave=False)
            self._cond.wait_for(lambda: self._current == name)

    def _pass(self, name: str, leave: bool) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds[name] += now - self._since
        self.cpu_seconds[name] += cpu - self._cpu_since
        self._since, self._cpu_since = now, cpu
        position = self._order.index(name)
        if leave:
            self._order.remove(name)
        else:
            position += 1
        self._current = self._order[position % len(self._order)] if self._order else None
        self._cond.notify_all()


def hand_on_after_each_batch(split, name: str, turns: TakeTurns) -> None:
    """A bench's one hook into a trainer: after each batch's step, ``split.batches`` lets the next
    job take its turn."""
    batches = split.batches

    def taking_turns(*args, **kwargs):
        for batch in batches(*args, **kwargs):
            yield batch  # the trainer steps on it, then asks for the next one
            turns.turn(name)

    split.batches = taking_turns


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of the per-round ratios a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b))


def spread(a: Sequence[float], b: Sequence[float]) -> str:
    """The interquartile range of the per-round ratios, to show how noisy the median is."""
    ratios = sorted(x / y for x, y in zip(a, b))
    if len(ratios) < 4:
        return f"ratios {', '.join(f'{r:.3f}' for r in ratios)}"
    q = statistics.quantiles(ratios, n=4)
    return f"interquartile {q[0]:.3f}..{q[2]:.3f} over {len(ratios)} rounds"


def verdict(name: str, ok: bool, detail: str) -> bool:
    quick = " [--quick: too small a run to judge; run without --quick]" if "--quick" in sys.argv else ""
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}{quick}")
    return ok
