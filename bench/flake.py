"""The multi-process tests, many times in a row, and the page that counts their failures (``make flake``).

    python bench/flake.py --runs 20      # about 5 min a run on 2 cores: bench/flake.md
    python bench/flake.py --runs 1       # a quick check of the script and the machine

A test that starts several processes (torchrun, spawned gloo workers, two torchrun agents, the
accelerate and Lightning examples) can fail now and then for reasons one run never shows: a
port taken, a rank slower than a timeout, an abort at a worker's exit. This runs the test files
that start processes (those that import tests/launch.py, the helpers that start them) the way CI
runs the suite, ``pytest -q -n 2 --dist loadfile`` (the Makefile's ``test`` target), ``--runs``
times one after the other, and writes bench/flake.md: for every test, in how many runs it failed;
then the command, date, commit and machine, and the load the machine carried (the aborts this
page was built to catch came only under load). The page is rewritten after every run, so a run
stopped half way still leaves its counts. Exit status 1 when any test failed in any run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from _common import cpu_model

REPO = Path(__file__).resolve().parent.parent
PAGE = Path(__file__).resolve().parent / "flake.md"
RECORD = REPO / "runs" / "flake-record.json"  # every run's outcomes, for --page-only (runs/ is not committed)
TESTS = REPO / "tests"


def multi_process_files(tests: Path = TESTS) -> list[str]:
    """The test files that start several processes: every one does it through tests/launch.py."""
    uses_launch = re.compile(r"^\s*from launch import|^\s*import launch\b", re.M)
    return sorted(f"tests/{p.name}" for p in tests.glob("test_*.py") if uses_launch.search(p.read_text()))


def pytest_command(files: list[str], workers: int, junit: Path) -> list[str]:
    # The Makefile's `test` target, with a report per run (-p no:cacheprovider: no run changes the next)
    return [sys.executable, "-m", "pytest", "-q", "-n", str(workers), "--dist", "loadfile", "-p", "no:cacheprovider",
            f"--junitxml={junit}", *files]


def outcomes(junit: Path) -> dict[str, tuple[str, str]]:
    """test id -> (outcome, first line of its failure message) from a pytest junit XML report.

    outcome: passed, failed (an assertion or an exception in the test), error (in a fixture or at
    collection) or skipped. The id is pytest's: tests/file.py::name[param]."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = node_id(case.get("classname", ""), case.get("name", "?"))
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip().splitlines()[:1]
                message = message[0] if message else ""
                break
        if test_id not in found or SEVERITY[outcome] > SEVERITY[found[test_id][0]]:  # a teardown error after a pass
            found[test_id] = (outcome, message)
    return found


SEVERITY = {"passed": 0, "skipped": 1, "failed": 2, "error": 2}


def node_id(classname: str, name: str) -> str:
    """pytest's id back from junit's dotted classname: tests.test_x.TestY + name -> tests/test_x.py::TestY::name
    (the longest prefix that is a file of the repository is the module; else the parts before a capitalised one)."""
    parts = classname.split(".")
    for k in range(len(parts), 0, -1):
        if (REPO / ("/".join(parts[:k]) + ".py")).is_file():
            break
    else:
        k = next((i for i, part in enumerate(parts) if part[:1].isupper()), len(parts))
    return "::".join(["/".join(parts[:k]) + ".py", *parts[k:], name])


def busy_processes(exclude: set[int]) -> list[str]:
    """Other processes that have used over a tenth of a CPU in their life (ps's %CPU), with their
    nice value: the load this machine carried besides the tests."""
    ps = subprocess.run(["ps", "-eo", "pid=,pcpu=,ni=,args="], capture_output=True, text=True)
    busy = []
    for line in ps.stdout.splitlines():
        pid, pcpu, ni, args = line.split(None, 3)
        if int(pid) not in exclude and float(pcpu) >= 10:
            busy.append(f"`{args[:110]}` (nice {ni})")
    return busy


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "tests"], cwd=REPO,
                           capture_output=True, text=True)
    return head.stdout.strip() + (" with uncommitted changes in src/ or tests/" if dirty.stdout.strip() else "")


def machine() -> dict:
    import platform

    import torch

    return {"cpu": cpu_model(), "nproc": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}


def run_once(files: list[str], workers: int, junit: Path) -> dict:
    """One pytest run of ``files``; its outcomes, exit status, seconds and the load it started under."""
    load = os.getloadavg()[0]
    busy = busy_processes({os.getpid()})
    t0 = time.perf_counter()
    proc = subprocess.run(pytest_command(files, workers, junit), cwd=REPO, capture_output=True, text=True)
    return run_result(junit, proc.returncode, time.perf_counter() - t0, load, busy, proc.stdout, proc.stderr)


def run_result(junit: Path, exit_status: int, seconds: float, load: float, busy: list[str], stdout: str,
               stderr: str) -> dict:
    """What the page needs of one run; a run without a report (pytest itself failed) has no outcomes."""
    return {"outcomes": outcomes(junit) if junit.exists() else {}, "exit_status": exit_status, "seconds": seconds,
            "load_avg_1m": load, "busy": busy, "summary": (stdout.strip().splitlines() or [""])[-1],
            "tail": "" if exit_status == 0 else (stdout.rstrip() + "\n" + stderr)[-3000:]}


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def write_page(record: dict, page: Path = PAGE) -> int:
    """bench/flake.md from ``record`` (what main collects: the runs so far and how they were run);
    returns the number of (run, test) failures."""
    runs, planned = record["runs"], record["planned"]
    tests = sorted({t for r in runs for t in r["outcomes"]})
    failed = {t: [i for i, r in enumerate(runs, 1) if r["outcomes"].get(t, ("missing",))[0] in ("failed", "error")]
              for t in tests}
    missing = {t: [i for i, r in enumerate(runs, 1) if t not in r["outcomes"]] for t in tests}
    skipped = {t: sum(r["outcomes"].get(t, ("",))[0] == "skipped" for r in runs) for t in tests}
    n, failures = len(runs), sum(len(v) for v in failed.values())
    broken = [i for i, r in enumerate(runs, 1) if r["exit_status"] not in (0, 1) or not r["outcomes"]]
    loads = [r["load_avg_1m"] for r in runs]
    seen = collections.Counter(b for r in runs for b in set(r["busy"]))
    busy = [f"{b} at the start of {k} run{'s' * (k != 1)}" for b, k in sorted(seen.items(), key=lambda x: (-x[1], x[0]))]
    minutes = sum(r["seconds"] for r in runs) / 60
    m = record["machine"]
    rows = sorted(tests, key=lambda t: (-len(failed[t]), t))
    lines = [
        "# Multi-process tests, run after run",
        "",
        "Written by `bench/flake.py` (`make flake`): the test files that start several processes, run the way CI "
        "runs the suite, one run after the other; a test's count is the runs in which it failed. Not part of CI.",
        "",
        f"- command: {record['command']}; it runs, {planned} time{'s' * (planned != 1)}: `{record['pytest']}`",
        f"- date: {record['started']}; {n} run{'s' * (n != 1)} took {minutes:.0f} min"
        + (f" (**partial: {n} of {planned} runs so far**)" if n < planned else ""),
        f"- commit: {record['commit']}",
        f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; torch {m['torch']}; python {m['python']}",
        f"- load: load average {min(loads, default=0):.1f} to {max(loads, default=0):.1f} at the start of a run "
        f"(on {m['nproc']} CPUs); "
        + ("other busy processes: " + "; ".join(busy) if busy else "no other process was using a CPU at any run's start"),
        *([f"- note: {record['note']}"] if record.get("note") else []),
        "",
        f"**{failures} failure{'s' * (failures != 1)} in {n} run{'s' * (n != 1)} of {len(tests)} tests**"
        + (f"; {sum(1 for t in tests if failed[t])} test(s) failed at least once" if failures else "")
        + (f"; runs {', '.join(map(str, broken))} ended without a report or with pytest's own error "
           "(their output is below)" if broken else "") + ".",
        "",
        "| test | failed | skipped | not reported |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {cell(t)} | {len(failed[t])} of {n} | {skipped[t]} | {len(missing[t])} |" for t in rows],
        "",
        "## Runs",
        "",
        "| run | exit status | minutes | load average at start | pytest's summary |",
        "| ---: | ---: | ---: | ---: | --- |",
        *[f"| {i} | {r['exit_status']} | {r['seconds'] / 60:.1f} | {r['load_avg_1m']:.1f} | {cell(r['summary'])} |"
          for i, r in enumerate(runs, 1)],
        "",
    ]
    if failures or broken:
        lines += ["## Failures", "", "| test | run | message |", "| --- | ---: | --- |"]
        lines += [f"| {cell(t)} | {i} | {cell(runs[i - 1]['outcomes'][t][1][:300])} |" for t in rows for i in failed[t]]
        for i in sorted(set(broken) | {i for v in failed.values() for i in v}):
            lines += ["", f"### Run {i}: the end of its output", "", "```", runs[i - 1]["tail"].strip(), "```"]
        lines.append("")
    page.write_text("\n".join(lines))
    return failures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=20, help="pytest runs, one after the other (default 20)")
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers, as `make test` (default 2)")
    p.add_argument("--out", type=Path, default=PAGE, help=f"the page (default {PAGE.relative_to(REPO)})")
    p.add_argument("--note", default="", help="a line for the page: where or why it was run")
    p.add_argument("--page-only", action="store_true", help=f"rewrite the page from {RECORD.relative_to(REPO)}, run nothing")
    args = p.parse_args()
    if args.page_only:
        return 1 if write_page(json.loads(RECORD.read_text()), args.out) else 0
    files = multi_process_files()
    invocation = " ".join(["python", str(Path(sys.argv[0]).resolve().relative_to(REPO)), *sys.argv[1:]])
    # make sets MAKELEVEL for the commands it runs: `make flake` is the command to name, then
    command = f"`make flake`, which runs `{invocation}`" if os.environ.get("MAKELEVEL") else f"`{invocation}`"
    record = {"runs": [], "planned": args.runs, "command": command, "note": args.note,
              "pytest": " ".join(["python", *pytest_command(files, args.workers, Path("RUN.xml"))[1:]]),
              "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit(), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="droppick-flake-") as tmp:
        for i in range(1, args.runs + 1):
            run = run_once(files, args.workers, Path(tmp) / f"run-{i}.xml")
            record["runs"].append(run)
            RECORD.parent.mkdir(exist_ok=True)
            RECORD.write_text(json.dumps(record, indent=1))
            failures = write_page(record, args.out)
            print(f"run {i}/{args.runs}: {run['summary']} ({run['seconds'] / 60:.1f} min); "
                  f"{failures} failure(s) so far -> {args.out}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
