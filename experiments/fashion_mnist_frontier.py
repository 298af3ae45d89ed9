"""The accuracy-compute frontier and the redundancy curve on Fashion-MNIST. From the repository root:

    .venv/bin/python experiments/fashion_mnist_frontier.py            # train what is missing, then report
    .venv/bin/python experiments/fashion_mnist_frontier.py --report   # only rewrite the report
    .venv/bin/python experiments/fashion_mnist_frontier.py --part redundancy --seed 0   # one process's share
    .venv/bin/python experiments/fashion_mnist_frontier.py --part tune     # the rules beyond the paper, on validation
    .venv/bin/python experiments/fashion_mnist_frontier.py --part beyond   # rs2 and those rules as tuned, 3 seeds
    .venv/bin/python experiments/fashion_mnist_frontier.py --part all-data # dap, rs2, the best of them on all images

Every run is an ordinary droppick run directory; finished runs are reused and interrupted ones
resumed, so the command can be repeated (across sessions) until everything is trained: more than
ten hours of this shared 2-core machine in all (a run took 4 minutes to 2.4 hours; the ones on all
6,000 images per class are the long ones). Processes given disjoint ``--part``/``--seed`` shares
train side by side; each rewrites the report when it ends, the last one with every run. It writes
experiments/fashion-mnist/frontier/README.md (with the command, date, machine and commit), its
plots, and the redundancy table.

Setting: the small CNN on the seeded class-stratified 20,000-image slice of experiments/fashion_mnist_report.py,
30 epochs, W = 4, I = 1, R = {15}, LR /10 after 15 and 22. Frontier: DaP at keep p = 0.8, 0.9 and 0.95
(about 45%, 63% and 78% compute), and random (the same schedule, uniform choice), scaled (all data
for that share of the epochs) and InfoBatch (its ratio calibrated to DaP's compute) at each DaP
budget, 3 seeds each. Redundancy curve: full and DaP (p = 0.9) on 600, 2,000 and 6,000 (all)
images per class with the same model and schedule. Beyond the paper (``--part tune`` then ``--part
beyond``, not trained by default; frontier_beyond.py): rs2, epsilon, ema and DaP with a floor on the
subset at the compute of keep 0.8 and 0.9, their hyper-parameters chosen on a validation split held
out of the training data, 3 seeds each, each row reported once its seeds are trained; and
(``--part all-data``) DaP at keep 0.8, rs2 and the rule the validation split ranks first at that
budget on all 60,000 images, 2 seeds each.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import frontier_beyond
from _report import beyond_noise, log, machine, noise_word, setting, standard_error, training_commits, utc_now
from droppick.budget import solve
from droppick.report.compare import aggregate, run_all, run_configs
from droppick.train.config import TrainConfig
from droppick.train.rundir import code_version

HERE = Path(__file__).resolve().parent / "fashion-mnist"
OUT = HERE / "frontier"
SEEDS = [0, 1, 2]
N = 20000
BASE = TrainConfig(dataset="fashion-mnist", model="small_cnn", train_samples=N, batch_size=128, lr=0.05,
                   momentum=0.9, weight_decay=5e-4, epochs=30, warmup=4, interval=1, keep=0.9, active=None,
                   reuse_at=[15], lr_milestones=[15, 22], device="cpu",
                   eval_batch_size=250,  # faster than 1000 on this CPU; a resumed or reused run may differ in it
                   # Only the final top-1 is reported, and evaluating 10,000 images after each of a 45%-compute
                   # run's epochs cost a quarter of its time; the last epoch is always evaluated. Runs trained
                   # before this setting evaluated every epoch; the final accuracy is the same either way.
                   eval_every=5)
KEEPS = [0.8, 0.9, 0.95]
POLICIES = ["dap", "random", "scaled", "infobatch"]
BUDGETS = [0.45, 0.63, 0.78]  # the round budgets the three keeps approximate, for the solver's proposals
# Where each keep's runs live: p = 0.9 is Table 2f's setting, whose runs the main report trained.
FOLDERS = {0.8: OUT / "keep-0.8", 0.9: HERE / "table2f", 0.95: OUT / "keep-0.95"}
PER_CLASS = {600: HERE / "redundancy", 2000: HERE / "table2f", 6000: OUT / "all-6000"}
SEEDS_AT = {600: SEEDS, 2000: SEEDS, 6000: [0, 1]}


def beyond_rows() -> list[frontier_beyond.Row]:
    return frontier_beyond.rows(BASE, SEEDS, N, OUT / "beyond")


def all_data_rows() -> list[frontier_beyond.Row]:
    return frontier_beyond.all_data_rows(BASE, N, OUT / "beyond")


def frontier_configs(keep: float) -> dict[str, TrainConfig]:
    return run_configs(TrainConfig.from_dict(BASE.to_dict() | {"keep": keep}), POLICIES, SEEDS, N)


def redundancy_configs(per_class: int) -> dict[str, TrainConfig]:
    if per_class == 2000:  # Table 2f's runs: the 20,000-image slice is 2,000 per class
        return run_configs(BASE, ["full", "dap"], SEEDS_AT[per_class], N)
    values = BASE.to_dict() | {"train_samples": None, "per_class": None if per_class == 6000 else per_class}
    return run_configs(TrainConfig.from_dict(values), ["full", "dap"], SEEDS_AT[per_class], 10 * per_class)


def train_missing(parts: list[str], seeds: list[int] | None = None, keeps: list[float] | None = None) -> None:
    def train(configs: dict[str, TrainConfig], folder: Path) -> None:
        run_all({name: c for name, c in configs.items() if seeds is None or c.seed in seeds}, folder, log=log)

    if "frontier" in parts:
        for keep in (0.9, 0.8, 0.95):  # 0.9 first: three InfoBatch runs complete the main report's table
            train(frontier_configs(keep), FOLDERS[keep])
    if "redundancy" in parts:
        for per_class in (600, 2000, 6000):
            train(redundancy_configs(per_class), PER_CLASS[per_class])
    if "tune" in parts:
        for c in frontier_beyond.tuning_candidates(BASE, N):
            if keeps is None or c.keep in keeps:
                train(frontier_beyond.tuning_configs(c, N), OUT / "beyond" / "tuning" / c.folder)
    if "beyond" in parts:
        for row in beyond_rows():
            if row.configs is not None and (keeps is None or row.keep in keeps):
                train(row.configs, row.folder)
    if "all-data" in parts:
        for row in all_data_rows():
            if row.configs is not None:
                train(row.configs, row.folder)


def rows_of(configs: dict[str, TrainConfig], folder: Path) -> dict | None:
    """Aggregated rows, or None while any of the runs is unfinished."""
    runs = folder / "runs"
    if not all((runs / name / "summary.json").exists() for name in configs):
        return None
    import json

    summaries = {name: json.loads((runs / name / "summary.json").read_text()) for name in configs}
    return aggregate(configs, summaries, folder)


def used_runs() -> list[Path]:
    """The run directories this report reads (Table 2f's full runs appear in two of its parts)."""
    parts = [(frontier_configs(keep), FOLDERS[keep]) for keep in KEEPS]
    parts += [(redundancy_configs(pc), PER_CLASS[pc]) for pc in PER_CLASS]
    parts += [(row.configs, row.folder) for row in beyond_rows() + all_data_rows()
              if row.configs is not None and rows_of(row.configs, row.folder) is not None]
    return [folder / "runs" / name for configs, folder in parts for name in configs]


def beyond(difference: float, se: float) -> str:
    return "yes" if beyond_noise(difference, se) else "no"


def write_report() -> bool:
    frontier = {keep: rows_of(frontier_configs(keep), FOLDERS[keep]) for keep in KEEPS}
    full = rows_of(run_configs(BASE, ["full"], SEEDS, N), HERE / "table2f")
    redundancy = {pc: rows_of(redundancy_configs(pc), PER_CLASS[pc]) for pc in PER_CLASS}
    missing = [f"keep {k}" for k, r in frontier.items() if r is None] + ["full"] * (full is None) + \
              [f"{pc}/class" for pc, r in redundancy.items() if r is None]
    if missing:
        log(f"report not written: runs still missing for {', '.join(missing)}")
        return False
    from frontier_plots import plot_frontier

    full = full["full"]
    OUT.mkdir(parents=True, exist_ok=True)
    plot_frontier(frontier, full, OUT / "frontier.png")
    lines = [
        "# Fashion-MNIST: the accuracy-compute frontier and the redundancy curve", "",
        f"Generated by `{' '.join([Path(sys.executable).name, *sys.argv])}` (from the repository root) on "
        f"{utc_now()} UTC at commit {code_version()['git_commit']}; machine (where the report was written; the "
        f"runs trained on it in the background, see Time): {machine()}. "
        + training_commits(used_runs()), "",
        setting(__doc__), "",
        "## Frontier: final top-1 against measured compute", "",
        "![frontier](frontier.png)", "",
        "| keep p | policy | seeds | compute (measured) | final top-1 (%) | vs full | > 2 SE? | vs DaP | > 2 SE? |",
        "| ---: | --- | ---: | ---: | ---: | ---: | :---: | ---: | :---: |",
    ]
    for keep, rows in frontier.items():
        dap = rows["dap"]
        for policy in POLICIES:
            r = rows[policy]
            d_full, d_dap = r["top1_mean"] - full["top1_mean"], r["top1_mean"] - dap["top1_mean"]
            vs_dap = ("", "") if policy == "dap" else (f"{d_dap:+.2f}", beyond(d_dap, standard_error(r, dap)))
            lines.append(f"| {keep} | {policy} | {r['seeds']} | {100 * r['compute_fraction']:.1f}% | "
                         f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {d_full:+.2f} | "
                         f"{beyond(d_full, standard_error(r, full))} | {vs_dap[0]} | {vs_dap[1]} |")
    lines += ["", f"Full (all data, 30 epochs): {full['top1_mean']:.2f} ± {full['top1_std']:.2f} over "
              f"{full['seeds']} seeds (the band in the plot). \"> 2 SE?\": whether the difference of the seed means "
              "exceeds two standard errors of that difference (a rough line with 2 or 3 seeds).", "",
              *frontier_beyond.section(beyond_rows(), frontier, full, rows_of), "",
              *frontier_beyond.all_data_section(all_data_rows(), redundancy[6000]["full"], rows_of), "",
              *frontier_beyond.tuning_section(BASE, N, OUT / "beyond" / "tuning",
                                              {k: frontier[k]["dap"]["top1_std"] for k in frontier_beyond.GRID}), "",
              *peers_rows(), "",
              "## What the budget solver proposes", "",
              "| budget | `droppick plan --target-compute X --solve keep` | its planned compute | trained keep | its compute |",
              "| ---: | --- | ---: | ---: | ---: |"]
    for budget, keep in zip(BUDGETS, KEEPS):
        proposed, compute = solve(BASE.schedule, N, budget, "keep")
        lines.append(f"| {100 * budget:.0f}% | keep {proposed.keep} | {100 * compute:.1f}% | {keep} | "
                     f"{100 * frontier[keep]['dap']['planned_compute_fraction']:.1f}% |")
    lines += ["", "## Redundancy curve (Section 4.2.3, Table 4)", "",
              "| images per class | seeds | full top-1 (%) | dap top-1 (%) | dap - full | its standard error |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    gaps = {}
    for pc, rows in redundancy.items():
        gap, se = rows["dap"]["top1_mean"] - rows["full"]["top1_mean"], standard_error(rows["dap"], rows["full"])
        gaps[pc] = (gap, se)
        lines.append(f"| {pc:,} | {rows['dap']['seeds']} | {rows['full']['top1_mean']:.2f} ± {rows['full']['top1_std']:.2f} | "
                     f"{rows['dap']['top1_mean']:.2f} ± {rows['dap']['top1_std']:.2f} | {gap:+.2f} | {se:.2f} |")
    lines += ["", "## What the numbers say", "", *findings(frontier, full, gaps), pooled_check(redundancy), "",
              "## Time", "", *time_section(frontier), ""]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    log(f"report written to {OUT / 'README.md'}")
    write_readme_table(frontier_beyond.budget_table(frontier, full, beyond_rows(), rows_of))
    return True


README = HERE.parent.parent / "README.md"
START, END = "<!-- policy-budget:start (written by experiments/fashion_mnist_frontier.py) -->", "<!-- policy-budget:end -->"


def peers_rows() -> list[str]:
    """The peers' rows and sentences at 44.6% and 62.7% (peers_report.py; their page has the rest)."""
    from peers_report import rows_section

    return rows_section(BASE, SEEDS, N, HERE, OUT / "peers", rows_of, "[the peers page](peers/README.md) has the tuning "
                        "table and the all-data rows", "The peers (Selective Backprop, SeTa, DaP ranking by a score)")[0]


def write_readme_table(table: list[str]) -> None:
    """The repository README's "which policy for which budget" block, from the frontier page's numbers."""
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README} has no {START} ... {END} block to write into")
    head, rest = text.split(START, 1)
    note = (f"Fashion-MNIST, the small CNN on a 20,000-image slice, 30 epochs, 3 seeds (mean ± std); rules beyond the "
            f"paper tuned on a validation split; within or beyond noise: whether the difference exceeds two standard "
            f"errors. Written by `{' '.join([Path(sys.executable).name, *sys.argv])}` (from the repository root) on "
            f"{utc_now()} UTC at commit {code_version()['git_commit']} from the runs of "
            "[its page](experiments/fashion-mnist/frontier/README.md), which says where each run trained.")
    README.write_text(head + START + "\n" + "\n".join([*table, "", note]) + "\n" + END + rest.split(END, 1)[1])


def findings(frontier: dict, full: dict, gaps: dict) -> list[str]:
    """Sentences computed from the numbers, including the ones that say a difference is noise."""
    out = []
    for keep, rows in frontier.items():
        dap = rows["dap"]
        d = dap["top1_mean"] - full["top1_mean"]
        others = sorted((p for p in POLICIES if p != "dap"), key=lambda p: -rows[p]["top1_mean"])
        ahead = {p: dap["top1_mean"] - rows[p]["top1_mean"] for p in others}
        clear = [p for p in others if beyond_noise(ahead[p], standard_error(dap, rows[p]))]
        beats, loses = [p for p in clear if ahead[p] > 0], [p for p in clear if ahead[p] < 0]
        out.append(f"- At {100 * dap['compute_fraction']:.1f}% compute (p = {keep}) DaP is {d:+.2f} points from full "
                   f"({noise_word(d, standard_error(dap, full))} seed noise); it beats "
                   f"{', '.join(beats) or 'none of the others'} beyond seed noise, trails "
                   f"{', '.join(loses) or 'none'} beyond it, and is within noise of the rest.")
    free = [k for k, rows in frontier.items()
            if not beyond_noise(rows["dap"]["top1_mean"] - full["top1_mean"], standard_error(rows["dap"], full))]
    out.append(f"- DaP is within seed noise of full at keep {', '.join(map(str, free))}." if free else
               "- DaP is not within seed noise of full at any of these budgets.")
    sizes = sorted(gaps)
    trend = [gaps[pc][0] for pc in sizes]
    change, se = trend[0] - trend[-1], math.hypot(gaps[sizes[0]][1], gaps[sizes[-1]][1])
    out.append(f"- Redundancy: DaP's gap to full is {trend[0]:+.2f} at {sizes[0]:,} images per class and "
               f"{trend[-1]:+.2f} at {sizes[-1]:,}; the difference, {change:+.2f} ± {se:.2f}, is "
               + ("within two standard errors: these runs cannot confirm Table 4's claim that less redundant data "
                  "costs DaP more." if not beyond_noise(change, se) else
                  "beyond two standard errors: less data per class cost DaP more, as the paper's Table 4 reports."
                  if change < 0 else
                  "beyond two standard errors the other way: less data per class cost DaP less, unlike Table 4."))
    out.append(redundancy_steps(gaps))
    return out


def redundancy_steps(gaps: dict) -> str:
    """The endpoints can differ while the curve between them does not move the same way at every
    step: say how the gap changes from each size to the next, and whether it rises at every step."""
    sizes = sorted(gaps)
    steps = [(a, b, gaps[b][0] - gaps[a][0], math.hypot(gaps[a][1], gaps[b][1])) for a, b in zip(sizes, sizes[1:])]
    parts = [f"{change:+.2f} ± {se:.2f} from {a:,} to {b:,} ({noise_word(change, se)} "
             f"two standard errors)" for a, b, change, se in steps]
    rising = all(change > 0 for *_, change, _ in steps)
    return (f"- Step by step, the gap changes by {' and '.join(parts)}: it "
            + ("grows with the images per class at every step." if rising else
               "does not grow with the images per class at every step."))


def pooled_check(redundancy: dict) -> str:
    """Two seeds give a poor estimate of the spread (two runs can agree by chance), so the
    redundancy verdict is repeated with one spread pooled over every row of the curve."""
    rows = [r for size in redundancy.values() for r in size.values()]
    pooled = math.sqrt(sum((r["seeds"] - 1) * r["top1_std"] ** 2 for r in rows) / sum(r["seeds"] - 1 for r in rows))
    sizes = sorted(redundancy)

    def gap(pc: int) -> tuple[float, float]:
        dap, full = redundancy[pc]["dap"], redundancy[pc]["full"]
        return dap["top1_mean"] - full["top1_mean"], pooled ** 2 * (1 / dap["seeds"] + 1 / full["seeds"])

    (low, var_low), (high, var_high) = gap(sizes[0]), gap(sizes[-1])
    change, se = low - high, math.sqrt(var_low + var_high)
    fewest = min(r["seeds"] for r in rows)
    return (f"- With the seed spread pooled over all {len(rows)} rows of the redundancy curve (std {pooled:.2f}; "
            f"the fewest seeds in a row: {fewest}), the change of the gap from {sizes[0]:,} to {sizes[-1]:,} "
            f"images per class is {change:+.2f} ± {se:.2f}, {noise_word(change, se)} "
            "two standard errors.")


def time_section(frontier: dict) -> list[str]:
    """The runs shared this machine with the test suite and other jobs (niced in the background),
    so their seconds measure the load as much as the policy: say so rather than plot them."""
    return ["These runs trained in the background of development sessions on a shared 2-core machine, so their "
            "train seconds are not a measurement of speed and are not plotted; bench/README.md measures train "
            "time against compute on a quiet machine (bench/savings.py)."]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="only rewrite the report from the runs that exist")
    p.add_argument("--part", choices=["frontier", "redundancy", "tune", "beyond", "all-data"], action="append",
                   help="train only this part (repeatable; default frontier and redundancy: 'tune', 'beyond' and "
                        "'all-data' only when asked; these two train a tuned rule once its tuning runs are done). "
                        "The parts "
                        "write disjoint run folders, so two processes, one per part, can train side by side.")
    p.add_argument("--seed", type=int, action="append",
                   help="train only this seed's runs (repeatable; default all). Processes given disjoint seeds "
                        "can train one part side by side: two processes on one run would overwrite its checkpoints.")
    p.add_argument("--keep", type=float, action="append", choices=list(frontier_beyond.GRID),
                   help="tune and beyond: train only the rows at this DaP keep (repeatable; default all), so that "
                        "two processes can share the tuning runs, which all have one seed")
    args = p.parse_args()
    if not args.report:
        train_missing(args.part or ["frontier", "redundancy"], args.seed, args.keep)
    write_report()


if __name__ == "__main__":
    main()
