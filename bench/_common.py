"""Shared helpers for the benchmarks: machine facts, interleaved A/B timing, verdict lines.

The machine these run on is shared, so absolute seconds drift by tens of percent from one
minute to the next. Every comparison here therefore runs its variants interleaved (A B, then
B A, ...) in one process, and reports the median of the per-round ratios: drift that lasts
longer than a round cancels.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
# $DROPPICK_DATA/fashion-mnist when set (as the library reads it), else Debian's location
FASHION_MNIST = os.path.join(os.environ.get("DROPPICK_DATA", "/usr/share/datasets"), "fashion-mnist")


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None):
    """--quick, and --threads (default 1, applied here: see THREADS_NOTE)."""
    import torch

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a much smaller run (seconds), for smoke tests")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    if extra:
        extra(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    return args


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
          f"({m['torch_threads']} threads); python {m['python']}; load average {m['load_avg_1m']}"
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
