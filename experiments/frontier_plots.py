"""The frontier plot: final top-1 (mean ± std over seeds) against measured compute, one line per
policy, the full run as a horizontal band."""

from __future__ import annotations

from pathlib import Path

from droppick.report.plot import _pyplot

DODGE = 0.4  # percentage points of compute between neighbouring policies' points


def plot_frontier(frontier: dict, full: dict, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    low, high = full["top1_mean"] - full["top1_std"], full["top1_mean"] + full["top1_std"]
    ax.axhspan(low, high, color="0.85", label="full, 100% compute (mean ± std)")
    ax.axhline(full["top1_mean"], color="0.5", lw=1)
    policies = list(next(iter(frontier.values())))
    for i, policy in enumerate(policies):
        points = sorted((rows[policy]["compute_fraction"], rows[policy]["top1_mean"], rows[policy]["top1_std"])
                        for rows in frontier.values())
        xs, ys, es = zip(*points)
        # The policies of one budget measure almost the same compute: shift each a little sideways
        # so that their error bars do not hide one another.
        shift = DODGE * (i - (len(policies) - 1) / 2)
        ax.errorbar([100 * x + shift for x in xs], ys, yerr=es, marker="o", capsize=3, label=policy)
    ax.set_xlabel(f"measured compute (% of the full run's samples)\n(the policies of one budget are drawn "
                  f"up to ±{DODGE * (len(policies) - 1) / 2:.1f} apart so their bars show)", fontsize=9)
    ax.set_ylabel("final test top-1 (%)")
    ax.set_title("Fashion-MNIST, small CNN, 20,000-image slice, 30 epochs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
