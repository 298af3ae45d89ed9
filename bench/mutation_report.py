"""Mutation testing of the DaP core, and the page that reports it (``make mutate``).

    python bench/mutation_report.py --run     # nice -n 19 mutmut run (about 40 min on 2 cores), then the page
    python bench/mutation_report.py           # the page again, from the results left in mutants/

mutmut (the ``mutate`` extra) mutates src/droppick/{schedule,selection,sampler,engine}.py and
src/droppick/policies/ and runs, for each mutant, the fast tests that reach the mutated function
(``[tool.mutmut]`` in pyproject.toml: tests/test_engine.py, test_schedule.py, test_policies.py).
The page, bench/mutation.md, gives the score, the command, date, commit and machine, and every
mutant no test killed. A survivor is either a gap in the tests or equivalent to the original
(no test could tell them apart): bench/mutation_equivalent.json lists the equivalent ones, each
with the change it was judged on and one line saying why. An entry whose change no longer
matches the mutant of that name (the source moved) is shown as stale and not counted as
equivalent. Score: killed / (all mutants - equivalent ones).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import machine

REPO = Path(__file__).resolve().parent.parent
MUTANTS = REPO / "mutants"
EQUIVALENT = Path(__file__).resolve().parent / "mutation_equivalent.json"
PAGE = Path(__file__).resolve().parent / "mutation.md"
RUN_RECORD = MUTANTS / "droppick-run.json"  # what --run measured: the page needs it after the run
TARGET = 0.90

# mutmut's exit codes (mutmut/stats.py): 1 and 3 are kills; a timeout or a crash also kills.
KILLED = {1, 3, 36, -24, 24, 152, 255, -11, -9}
SURVIVED, NO_TESTS, NOT_CHECKED = 0, {5, 33}, None


def run_mutmut(children: int) -> dict:
    """A fresh ``mutmut run`` (a left-over mutants/ would reuse results of other tests)."""
    subprocess.run(["rm", "-rf", str(MUTANTS)], check=True)
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run", "--max-children", str(children)]
    started, t0, tested = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter(), commit()
    proc = subprocess.run(command, cwd=REPO)
    invocation = " ".join(["python", str(Path(sys.argv[0]).resolve().relative_to(REPO)), *sys.argv[1:]])
    record = {"started": started, "minutes": (time.perf_counter() - t0) / 60, "children": children,
              "invocation": invocation,
              "exit_status": proc.returncode, "machine": machine(), "commit": tested}
    RUN_RECORD.write_text(json.dumps(record, indent=1))
    return record


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True)
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def results() -> dict[str, tuple[Path, int | None]]:
    """Every mutant's name -> (its source file, mutmut's exit code), from mutants/**/*.py.meta."""
    found = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        source = meta.relative_to(MUTANTS).with_suffix("")
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            found[name] = (source, code)
    return found


def tests_selected() -> str:
    """The test files and deselections of ``[tool.mutmut]`` in pyproject.toml, as the page states them."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    args = config.get("pytest_add_cli_args", [])
    left_out = [args[i + 1] for i, a in enumerate(args) if a == "--deselect"]
    files = ", ".join(Path(t).name for t in config["pytest_add_cli_args_test_selection"])
    return f"those of {files} that reach the mutated function" + (
        f" (left out: {', '.join(t.split('::')[-1] for t in left_out)}, a trainer-level test)" if left_out else "")


def per_file(found: dict, equivalent: set) -> list[str]:
    rows = []
    for source in sorted({str(s) for s, _ in found.values()}):
        names = [n for n, (s, _) in found.items() if str(s) == source]
        eq = sum(n in equivalent for n in names)
        killed = sum(found[n][1] in KILLED for n in names)
        rows.append(f"| {source} | {len(names)} | {eq} | {killed} | {len(names) - eq - killed} |")
    return rows


def change_of(name: str, source: Path) -> str:
    """The mutant's changed lines, ``- old / + new`` (from mutmut's own diff)."""
    sys.path.insert(0, str(MUTANTS))  # mutmut reads its index relative to the working directory
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=source)
    lines = [line for line in diff.splitlines()[2:] if line[:1] in "-+"]
    return " / ".join(f"{line[0]} {line[1:].strip()}" for line in lines)


def short(name: str) -> str:
    """``droppick.engine.xǁDropAndPickǁflush__mutmut_3`` -> ``engine DropAndPick.flush #3``."""
    module, _, rest = name.partition(".x")
    function, _, number = rest.rpartition("__mutmut_")
    return f"{module.removeprefix('droppick.')} {function.strip('_ǁ').replace('ǁ', '.')} #{number}"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def write_page(record: dict | None) -> float:
    import os

    os.chdir(REPO)
    found = results()
    if not found:
        raise SystemExit(f"no mutmut results under {MUTANTS}: run `make mutate` (or this script with --run)")
    equivalent = json.loads(EQUIVALENT.read_text())
    killed = [n for n, (_, c) in found.items() if c in KILLED]
    unchecked = [n for n, (_, c) in found.items() if c is NOT_CHECKED]
    alive = [n for n, (_, c) in found.items() if c not in KILLED and c is not NOT_CHECKED]
    rows_eq, rows_gap, stale, judged_equivalent = [], [], [], set()
    for name in sorted(alive):
        source, code = found[name]
        change = change_of(name, source)
        why = equivalent.get(name)
        status = "no test reaches it" if code in NO_TESTS else "survived" if code == SURVIVED else f"exit {code}"
        if why and why["change"] == change:
            judged_equivalent.add(name)
            rows_eq.append(f"| {short(name)} | `{cell(change)}` | {cell(why['why'])} |")
        else:
            if why:
                stale.append(name)
            rows_gap.append(f"| {short(name)} | {status} | `{cell(change)}` |")
    counted = len(found) - len(rows_eq)
    score = len(killed) / counted if counted else 0.0
    run = record or {}
    m = run.get("machine") or machine()
    partial = (f"**Partial result: {len(unchecked)} of {len(found)} mutants were not checked** (the run was "
               "stopped before it finished); the score counts only the checked ones as killed."
               if unchecked else "")
    text = "\n".join([
        "# Mutation testing of the DaP core",
        "",
        "Written by `bench/mutation_report.py` from mutmut's results (`make mutate`); not part of CI.",
        "",
        f"- command: `make mutate`, which runs `{run.get('invocation', 'python bench/mutation_report.py --run')}`: "
        f"`nice -n 19 mutmut run --max-children {run.get('children', '?')}` on a fresh mutants/, then this page"
        + (f"; the run took {run['minutes']:.0f} min" if "minutes" in run else "")
        + (f" and mutmut exited with status {run['exit_status']}" if run.get("exit_status") else ""),
        f"- date: {run.get('started', m['date'])}",
        f"- commit: {run.get('commit') or commit()}",
        f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; torch {m['torch']}; python {m['python']}; "
        f"load average {m['load_avg_1m']} at the start (the machine is shared)",
        f"- tests run against each mutant: {tests_selected()}",
        "",
        *([partial, ""] if partial else []),
        f"**Score: {len(killed)} of {counted} non-equivalent mutants killed, {100 * score:.1f}%** "
        f"(target {100 * TARGET:.0f}%; {len(found)} mutants, {len(rows_eq)} equivalent, "
        f"{len(rows_gap)} not killed{', ' + str(len(unchecked)) + ' not checked' if unchecked else ''}).",
        "",
        "| file | mutants | equivalent | killed | not killed |",
        "| --- | ---: | ---: | ---: | ---: |",
        *per_file(found, judged_equivalent),
        "",
        f"## Mutants not killed ({len(rows_gap)})",
        "",
        "Gaps in the tests, unless listed as equivalent below."
        + (f" Stale equivalence entries (their change no longer matches): {', '.join(map(short, stale))}."
           if stale else ""),
        "",
        "| mutant | status | change |",
        "| --- | --- | --- |",
        *rows_gap,
        "",
        f"## Equivalent mutants ({len(rows_eq)})",
        "",
        f"No test can tell these from the original; the reasons are in {EQUIVALENT.relative_to(REPO)}.",
        "",
        "| mutant | change | why it is equivalent |",
        "| --- | --- | --- |",
        *rows_eq,
        "",
    ])
    PAGE.write_text(text)
    print(f"wrote {PAGE}: {len(killed)}/{counted} killed ({100 * score:.1f}%), {len(rows_gap)} not killed, "
          f"{len(rows_eq)} equivalent, {len(unchecked)} not checked")
    return score


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="store_true", help="run mutmut first (fresh mutants/), then write the page")
    p.add_argument("--children", type=int, default=2, help="mutmut's parallel test processes (default 2)")
    args = p.parse_args()
    record = run_mutmut(args.children) if args.run else (
        json.loads(RUN_RECORD.read_text()) if RUN_RECORD.exists() else None)
    score = write_page(record)
    return 0 if score >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
