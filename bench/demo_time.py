"""Time the README's `make demo` on a fresh clone and write the result into the README.

    python bench/demo_time.py            # about 5 minutes; rewrites the README's demo-time block

A fresh machine runs three things: `make install` (a new .venv, PyTorch from the pinned wheels, the
package), the Debian package `dataset-fashion-mnist`, and the demo's two trainings (all data and DaP,
``droppick demo``), whose results it reads from runs/demo/demo.json. This clones HEAD into a
temporary folder and times each: the install and the training as `make` runs them there, and the
data as `apt-get update` plus a reinstall of the package (as root; otherwise it is reported as not
measured), since the files already installed on this machine would make `make data` a no-op.
The block says which commit, machine and date the seconds come from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, machine

DEMO_JSON = "runs/demo/demo.json"  # what `make demo` (droppick demo --out runs/demo) writes
START, END = "<!-- demo-time:start (written by bench/demo_time.py) -->", "<!-- demo-time:end -->"


def timed(argv: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def describe(result: dict, install: float, data: float | None, demo: float, m: dict, commit: str) -> str:
    """The README's line: the seconds of each step, and from ``result`` (the demo's demo.json)
    both runs' final test top-1, DaP's compute and its training time as a fraction of full's."""
    total = install + (data or 0.0) + demo
    data_text = f"data {data:.0f} s" if data is not None else "data not measured (not root)"
    full, dap = result["policies"]["full"], result["policies"]["dap"]
    return (f"Measured: `make demo` took **{total / 60:.1f} minutes** on a fresh clone (install {install:.0f} s, "
            f"{data_text}, training and evaluation of both runs {demo:.0f} s; final test top-1 full "
            f"{full['top1_mean']:.2f}%, DaP {dap['top1_mean']:.2f}% at {100 * dap['compute_fraction']:.1f}% compute "
            f"in {100 * dap['train_time_vs_full']:.0f}% of full's training time), "
            f"on {m['cpu']} ({m['nproc']} cores), {m['date']}, commit {commit}, by `python bench/demo_time.py`.")


def main() -> int:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    m = machine()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "droppick"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        install = timed(["make", "install"], clone)
        data = None
        if os.geteuid() == 0:
            data = timed(["sh", "-c", "apt-get update -qq && apt-get install --reinstall -y -qq "
                                      "dataset-fashion-mnist"], clone)
        demo = timed(["make", "demo"], clone)  # install and data are done: this is the training
        result = json.loads((clone / DEMO_JSON).read_text())
    line = describe(result, install, data, demo, m, commit)
    print(line)
    readme = REPO / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        print(f"README.md has no {START} ... {END} block to write into", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    readme.write_text(head + START + "\n" + line + "\n" + END + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
