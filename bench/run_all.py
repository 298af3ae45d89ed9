"""Run every benchmark and write the results file, with the machine beside the numbers.

    python bench/run_all.py            # all benchmarks (about 15 minutes on 2 cores); writes
                                       # bench/results.md and the results block of bench/README.md
    python bench/run_all.py --quick    # seconds each; writes bench/results-quick.md only
    python bench/run_all.py --only selection savings   # replaces those benchmarks' rows and sections
                                                       # in both files, with a line saying when

Each benchmark runs in its own process (``python bench/NAME.py``); its standard output goes
into the results file verbatim, and its PASS/FAIL/INFO lines into the summary table.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import machine
from droppick.train.rundir import code_version

HERE = Path(__file__).resolve().parent
BENCHES = ("bookkeeping", "savings", "selection", "trainer_speed", "distributed_gather", "compile_recompiles",
           "imagefolder_loader", "device_decode")
TABLE_HEAD = ["| benchmark | verdict | figures |", "| --- | --- | --- |"]
START, END = "<!-- results:start (written by bench/run_all.py) -->", "<!-- results:end -->"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    args = p.parse_args()
    m, code = machine(), code_version()
    command = "python bench/run_all.py" + (" --quick" if args.quick else "") + \
        (f" --only {' '.join(args.only)}" if args.only != list(BENCHES) else "")
    sections, summary, failed = [], [], False
    started = time.perf_counter()
    for name in args.only:
        argv = [sys.executable, str(HERE / f"{name}.py")] + (["--quick"] if args.quick else [])
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=HERE.parent)
        seconds = time.perf_counter() - t0
        output = proc.stdout.rstrip()
        if proc.returncode != 0:
            failed = True
            output += f"\n[exit status {proc.returncode}; stderr tail]\n" + "\n".join(proc.stderr.splitlines()[-20:])
        print(output, flush=True)
        sections.append(f"### {name}\n\n`python bench/{name}.py{' --quick' if args.quick else ''}` "
                        f"({seconds:.0f} s)\n\n```\n{output}\n```\n")
        for line in output.splitlines():
            match = re.match(r"(PASS|FAIL|INFO) (.*)", line)
            if match:
                figures = match.group(2).replace("|", "\\|")  # a literal | inside a table cell
                summary.append(f"| {name} | {match.group(1)} | {figures} |")
                failed |= match.group(1) == "FAIL"
        if proc.returncode != 0:
            summary.append(f"| {name} | ERROR | exit status {proc.returncode} |")
    total = time.perf_counter() - started
    full_run = args.only == list(BENCHES)
    text = "\n".join([
        f"## Benchmark results{' (--quick)' if args.quick else ''}",
        "",
        f"- command: `{command}` ({total / 60:.1f} min in all)",
        f"- date: {m['date']}",
        f"- commit: {code['git_commit']}" + (" with uncommitted changes" if code["git_dirty"] else ""),
        f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; torch {m['torch']}; python {m['python']}; "
        f"load average {m['load_avg_1m']} at the start (the machine is shared)",
        "- every benchmark runs 1 torch thread unless it says otherwise (see bench/_common.py)",
        "",
        *TABLE_HEAD,
        *summary,
        "",
        *sections,
    ])
    rerun = (f"- rerun since: `{command}` ({total / 60:.1f} min) on {m['date']} at commit {code['git_commit']}"
             f"{' with uncommitted changes' if code['git_dirty'] else ''}, load average {m['load_avg_1m']} at its start")
    out = HERE / ("results-quick.md" if args.quick else "results.md")
    if full_run or args.quick or not out.exists():
        out.write_text(text + "\n")
    else:  # a partial rerun updates its benchmarks in the last full results, and says so
        out.write_text(merge(out.read_text().rstrip("\n"), text, args.only, rerun) + "\n")
    print(f"wrote {out}")
    readme = HERE / "README.md"
    body = readme.read_text()
    if not args.quick and START in body and END in body:
        head, rest = body.split(START, 1)
        block, tail = rest.split(END, 1)
        block = text if full_run else merge(block.strip("\n"), text, args.only, rerun)
        readme.write_text(head + START + "\n" + block + "\n" + END + tail)
        print(f"updated the results block of {readme}")
    return 1 if failed else 0


def merge(previous: str, fresh: str, names: list[str], rerun: str) -> str:
    """``previous`` results (bullets, the table, one ``### name`` section per benchmark) with the
    table rows and sections of ``names`` taken from ``fresh``, and the ``rerun`` bullet added."""
    def split(text: str) -> tuple[list[str], list[str], dict[str, str]]:
        top, _, body = text.partition("\n### ")
        lines = top.rstrip("\n").splitlines()
        table = lines.index(TABLE_HEAD[0])
        sections = [part for part in body.split("\n### ") if part] if body else []
        return lines[:table], lines[table + 2:], {part.split("\n", 1)[0]: part.rstrip("\n") for part in sections}

    intro, rows, sections = split(previous)
    _, fresh_rows, fresh_sections = split(fresh)
    order = [name for name in BENCHES if name in sections or name in names]
    merged = [row for name in order for row in (fresh_rows if name in names else rows)
              if row.startswith(f"| {name} | ")]
    body = [(fresh_sections if name in names else sections)[name] for name in order]
    return "\n".join(intro[:-1] + [rerun, ""] + TABLE_HEAD + merged + [""] + ["### " + "\n\n### ".join(body)])


if __name__ == "__main__":
    raise SystemExit(main())
