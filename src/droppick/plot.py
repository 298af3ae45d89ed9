"""Charts. matplotlib is imported lazily (and headless) so the core never pays for it."""

from __future__ import annotations

from pathlib import Path

from .schedule import DROP, PICK, Plan


def plot_plan(plan: Plan, path: str | Path, title: str = "") -> None:
    """Subset size against epoch, drops and picks marked: the paper's Figure 1 as a chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
