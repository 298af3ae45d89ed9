"""Charts. matplotlib is imported lazily (and headless) so the core never pays for it."""

from __future__ import annotations

from pathlib import Path

from ..plan import DROP, PICK, Plan


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_plan(plan: Plan, path: str | Path, title: str = "") -> None:
    """Subset size against epoch, drops and picks marked: the paper's Figure 1 as a chart."""
    plt = _pyplot()
    epochs = range(1, plan.epochs + 1)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.step(epochs, plan.subset_sizes, where="mid", color="tab:blue", label="subset size")
    for kind, color in ((DROP, "tab:orange"), (PICK, "tab:green")):
        marks = [e for e, ev in zip(epochs, plan.events) if ev == kind]
        ax.scatter(marks, [plan.subset_sizes[e - 1] for e in marks], s=12, color=color, zorder=3,
                   label=f"{kind} after epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("samples trained on")
    ax.set_ylim(0, plan.num_samples * 1.05)
    ax.set_title(title or f"compute {100 * plan.compute_fraction:.1f}% of {plan.epochs} epochs x {plan.num_samples}")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _curves(ax, rows: dict, key: str, ylabel: str) -> None:
    """One line per policy of ``rows[policy][key]`` (a value per epoch) against epoch."""
    for policy, r in rows.items():  # None: an epoch --eval-every did not evaluate
        points = [(e, v) for e, v in enumerate(r[key], start=1) if v is not None]
        ax.plot(*zip(*points), label=policy, marker=".", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def plot_demo(rows: dict, path: str | Path, title: str = "") -> None:
    """The demo's picture: test top-1 (top) and subset size (bottom) against epoch, one line per
    policy, on a shared epoch axis, so a dip in DaP's accuracy lines up with its smallest subset."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    _curves(top, rows, "epoch_top1", "test top-1 (%)")
    top.set_xlabel("")  # the shared axis is labelled once, below
    _curves(bottom, rows, "epoch_subset", "samples trained on")
    bottom.set_ylim(0, max(max(r["epoch_subset"]) for r in rows.values()) * 1.05)
    bottom.xaxis.get_major_locator().set_params(integer=True)
    top.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_compare(rows: dict, out: Path) -> list[Path]:
    """accuracy-vs-epoch, subset-vs-epoch and accuracy-vs-compute PNGs for ``compare``'s rows."""
    plt = _pyplot()
    paths = []
    for name, ylabel, key in (("accuracy_vs_epoch", "test top-1 (%), mean over seeds", "epoch_top1"),
                              ("subset_vs_epoch", "samples trained on (first seed)", "epoch_subset")):
        fig, ax = plt.subplots(figsize=(7, 4))
        _curves(ax, rows, key, ylabel)
        if key == "epoch_top1":  # the interesting part is the last few points, not the first epochs
            finals = [r[key][-1] for r in rows.values()]
            ax.set_ylim(min(finals) - 3, max(max(v for v in r[key] if v is not None) for r in rows.values()) + 0.5)
        fig.tight_layout()
        paths.append(Path(out) / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, r in rows.items():
        ax.errorbar(100 * r["compute_fraction"], r["top1_mean"], yerr=r["top1_std"], fmt="o", capsize=3, label=policy)
    ax.set_xlabel("compute (% of the full run)")
    ax.set_ylabel("final test top-1 (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(Path(out) / "accuracy_vs_compute.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
