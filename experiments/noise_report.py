"""The page of experiments/noise_training.py: experiments/fashion-mnist/noise/README.md, the
accuracy-compute rows on noisy labels, the targets of issue 32 read from them, every tuning candidate,
and the detection table (experiments/noise_detection.py's page, embedded)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import noise_training as nt
from _report import machine, noise_word, page_body, setting, standard_error, training_commits, utc_now
from droppick.report.compare import aggregate
from droppick.train.config import TrainConfig
from droppick.train.rundir import RunDir, code_version

DETECTION = Path(__file__).resolve().parent / "fashion-mnist" / "noise" / "detection" / "README.md"
LABELS = {"full": "full training", "dap": "the paper's DaP", "rs2": "rs2", "budget": "the budget rule",
          "trusted": "trusted (top share out)", "uniform": "trusted (worse than a uniform guess out)",
          "window": "loss window", "rho": "RHO-LOSS"}


def label(name: str, value: nt.Value) -> str:
    return LABELS[name] + ("" if value is None else f", {nt.GRID[name][0]} {value}")


def row_of(configs: dict[str, TrainConfig], folder: Path) -> Optional[dict]:
    """The finished seeds' aggregate (``compare.aggregate``) with the wrong labels' share of the last
    epoch's subset and the step-equivalent compute; None before the first seed finishes."""
    done = {name: cfg for name, cfg in configs.items() if (folder / "runs" / name / "summary.json").exists()}
    if not done:
        return None
    summaries = {name: json.loads((folder / "runs" / name / "summary.json").read_text()) for name in done}
    [row] = aggregate(done, summaries, folder).values()
    last = [RunDir(folder / "runs" / name).read_metrics()[-1] for name in done]
    wrong = [m["subset_wrong_labels"] / m["subset_size"] for m in last if "subset_wrong_labels" in m]
    steps = [s.get("step_equivalent_fraction", s["compute_fraction"]) for s in summaries.values()]
    return row | {"wanted": len(configs), "wrong_share": sum(wrong) / len(wrong) if wrong else None,
                  "steps": sum(steps) / len(steps), "paths": [folder / "runs" / name for name in done]}


def table(entries: list[tuple[str, Optional[dict]]]) -> list[str]:
    lines = ["| rule | step-equivalents | test top-1 (mean ± std) | seeds | wrong labels in the last epoch's subset |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in entries:
        if r is None:
            lines.append(f"| {name} | | not trained yet | 0 | |")
            continue
        wrong = "" if r["wrong_share"] is None else f"{r['wrong_share']:.1%}"
        lines.append(f"| {name} | {r['steps']:.3f} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | "
                     f"{r['seeds']} of {r['wanted']} | {wrong} |")
    return lines


def against(a: Optional[dict], b: Optional[dict], names: tuple[str, str], target: str) -> str:
    """One target's sentence: ``a`` at or above ``b`` (``target`` "above"), or within two standard errors
    of it ("within"); read only once both have all their seeds."""
    if a is None or b is None or a["seeds"] < a["wanted"] or b["seeds"] < b["wanted"]:
        return f"{names[0]} against {names[1]}: not all seeds trained yet."
    diff, se = a["top1_mean"] - b["top1_mean"], standard_error(a, b)
    met = diff >= 0 if target == "above" else abs(diff) <= 2 * se
    return (f"{names[0]} {a['top1_mean']:.2f} against {names[1]} {b['top1_mean']:.2f}: {diff:+.2f} ({noise_word(diff, se)} "
            f"two standard errors, {2 * se:.2f}); {'at or above' if target == 'above' else 'within two standard errors'}: "
            f"{'met' if met else 'not met, by ' + format(abs(diff) - (0 if target == 'above' else 2 * se), '.2f')}.")


def targets(rows: dict, picks: dict) -> list[str]:
    """Issue 32's training targets, from the rows (``rows[noise][(name, value)]``)."""
    out = []
    for noise in nt.NOISE:
        pick = picks.get(noise)
        if pick is None:
            out.append(f"- {noise}: the best rule is not chosen yet (tuning runs missing).")
            continue
        ours = rows[noise].get(pick)
        refs = [("rs2", None)] if noise == "symmetric-40" else [("full", None), ("rs2", None)]
        for ref in refs:
            out.append(f"- {noise}: " + against(ours, rows[noise].get(ref), (label(*pick), label(*ref)), "above"))
    default = picks.get("default")
    if default is not None:
        out.append("- clean labels: " + against(rows["clean"].get(default), rows["clean"].get(("budget", None)),
                                                (f"the default ({label(*default)})", "the budget rule"), "within"))
    return out


def tuning_table(scores: dict, picks: dict) -> list[str]:
    head = "| candidate | " + " | ".join(nt.NOISE) + " | mean |"
    lines = [head, "|" + " --- |" + " ---: |" * (len(nt.NOISE) + 1)]
    for name, value in nt.CANDIDATES:
        cells = [scores[noise, name, value] for noise in nt.NOISE]
        marks = ["" if picks.get(noise) != (name, value) else " (best)" for noise in nt.NOISE]
        default = " (default)" if picks.get("default") == (name, value) else ""
        mean = "" if None in cells else f"{sum(cells) / len(cells):.2f}{default}"
        lines.append(f"| {label(name, value)} | " + " | ".join("not trained yet" if c is None else f"{c:.2f}{m}"
                                                             for c, m in zip(cells, marks)) + f" | {mean} |")
    return lines


def write_page(base: TrainConfig, n: int, seeds: list[int], out: Path) -> Path:
    picks = {noise: nt.best(base, n, out, noise) for noise in nt.NOISE} | {"default": nt.default(base, n, out)}
    rows: dict[str, dict] = {noise: {} for noise in (*nt.NOISE, *nt.CLEAN)}
    lines_rows, used = [], []
    for r, configs, folder in nt.rows(base, seeds, n, out):
        rows[r.noise][r.rule, r.value] = row_of(configs, folder)
    for noise, found in rows.items():
        lines_rows += ["", f"### {noise}", "", *table([(label(*key), row) for key, row in found.items()])]
        used += [p for row in found.values() if row for p in row["paths"]]
    lines_all = []
    for r, configs in nt.all_data(base, n, out):
        row = row_of(configs, out / "all-60000" / r.folder)
        lines_all.append((f"{r.noise}: {label(r.rule, r.value)}", row))
        used += row["paths"] if row else []
    page = out.parent / "README.md"
    lines = ["# Training on noisy labels", "",
             f"Generated by `{' '.join([Path(sys.executable).name, *sys.argv])}` (from the repository root) on "
             f"{utc_now()} UTC at commit {code_version()['git_commit']}; machine: {machine()}. "
             + (training_commits(used) if used else "No run is trained yet."), "",
             setting(nt.__doc__), "",
             "## Targets (issue 32), at 44.6% compute", "", *targets(rows, picks), "",
             "## Rows: test top-1 on the clean test split", *lines_rows, "",
             "## All 60,000 images, 2 seeds", "", *table(lines_all), "",
             "## Tuning: every candidate's noisy validation top-1 (seed 0)", "",
             "The best per noise setting trains the rows beside the baselines; the best mean over the three "
             "settings is the default, and trains on the clean labels too.", "",
             *tuning_table(nt.validation(base, n, out), picks)]
    if DETECTION.exists():
        lines += ["", "## Finding the wrong labels (experiments/noise_detection.py)", "",
                  *page_body(DETECTION, "detection/")]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + "\n")
    return page


FLAGS = {"trusted": "--policy trusted --trusted-share {}", "uniform": "--policy trusted --trusted-suspects uniform --score {}",
         "window": "--policy window --window-skip {}", "rho": "--policy rho --rho-epochs {} --val-samples V"}


def readme_line(base: TrainConfig, n: int, seeds: list[int], out: Path) -> str:
    """The README's sentence under its budget table: what to use on noisy labels, from this page's rows."""
    link = "[the noise page](experiments/fashion-mnist/noise/README.md)"
    pick = nt.default(base, n, out)
    rows = {} if pick is None else {r.noise: row_of(c, folder) for r, c, folder in nt.rows(base, seeds, n, out)
                                    if (r.rule, r.value) == pick}
    if pick is None or any(rows.get(noise) is None or rows[noise]["seeds"] < len(seeds) for noise in (*nt.NOISE, *nt.CLEAN)):
        return (f"On noisy labels: not measured yet; {link} trains the baselines and the rules that keep suspected "
                "wrong labels out of the subsets at 44.6% compute, with 20% and 40% symmetric and 20% pairs noise.")
    scores = ", ".join(f"{noise} {rows[noise]['top1_mean']:.2f}" for noise in (*nt.NOISE, *nt.CLEAN))
    return (f"On noisy labels (44.6% compute), the rule with the best mean noisy-validation top-1 is {label(*pick)}: "
            f"`{FLAGS[pick[0]].format(pick[1])}` on the budget rule's schedule (test top-1 {scores}; {link} has "
            "full training, rs2 and the budget rule beside it, and which targets it meets).")
