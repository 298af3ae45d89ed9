"""The budget page's plots (budgets_report.py): the rule's floor against the validation winners, the
regimes' test top-1 by epoch and their class mix."""

from __future__ import annotations

import statistics
from pathlib import Path

from droppick.report.plot import _pyplot
from droppick.schedule import FLOOR_SHARE, MIN_FLOOR, WARMUP_SHARE, for_budget
from droppick.train.rundir import RunDir
from fashion_mnist_frontier import BASE

FRONTIER = (BASE.epochs, BASE.warmup, BASE.interval, BASE.reuse_at)  # the schedule the rule is read on


def plot_fit(points: list, n: int, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    grid = [0.21 + 0.01 * i for i in range(75)]
    ax.plot([100 * c for c in grid], [for_budget(c, n, *FRONTIER).min_keep for c in grid],
            label=f"the rule (W {int(WARMUP_SHARE * BASE.warmup)}, {FLOOR_SHARE} x largest floor from {MIN_FLOOR}, "
                  f"R = {', '.join(map(str, BASE.reuse_at))})")
    ax.scatter([100 * p.budget for p in points], [p.floor for p in points], color="C3", zorder=3,
               label="validation winners (their own W, R)")
    for p in points:
        ax.annotate(f"W {p.warmup}", (100 * p.budget, p.floor), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("compute (% of training on all data)")
    ax.set_ylabel("floor f (share of N)")
    ax.set_title("The budget rule's floor, N = 20,000")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(curves: dict[str, dict[str, list[Path]]], path: Path) -> None:
    """One panel per regime (``curves``: regime -> rule -> its seeds' run folders): test top-1 by epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, (name, by_rule) in zip(axes[0], curves.items()):
        for rule, runs in by_rule.items():
            per_run = [RunDir(run).read_metrics() for run in runs]
            epochs = [r["epoch"] for r in per_run[0] if r.get("test_top1") is not None]
            means = [statistics.fmean(rows[e - 1]["test_top1"] for rows in per_run) for e in epochs]
            ax.plot(epochs, means, marker=".", label=rule)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test top-1 (%)")
        ax.set_ylim(bottom=60)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mix(runs: dict[str, dict[str, Path]], path: Path) -> None:
    """One row per rule (``runs``: rule -> regime name -> run folder), one panel per regime."""
    plt = _pyplot()
    names = list(runs["budget"])
    fig, axes = plt.subplots(len(runs), len(names), figsize=(4.2 * len(names), 3.4 * len(runs)), squeeze=False)
    for row, (rule, by_regime) in zip(axes, runs.items()):
        for ax, name in zip(row, names):
            rows = RunDir(by_regime[name]).read_metrics() if name in by_regime else [{}]
            if "subset_class_counts" not in rows[0]:  # a run trained before the mix was recorded
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{rule}, {name}: class mix not recorded", ha="center", fontsize=8)
                continue
            totals = rows[0]["subset_class_counts"]  # epoch 1 trains on every image
            for c in range(len(totals)):
                ax.plot([r["epoch"] for r in rows], [r["subset_class_counts"][c] / totals[c] for r in rows],
                        label=f"class {c} ({totals[c]})", lw=1)
            ax.set_title(f"{'the budget rule' if rule == 'budget' else 'DaP'}: {name}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("share of the class trained on")
        row[-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
