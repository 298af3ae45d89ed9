"""``droppick demo`` (``make demo``): the all-data run and the DaP run of one recipe with the same
seed, so a newcomer sees what DaP saved and at what accuracy, not a number with nothing beside it.

The two runs are ordinary run directories under ``OUT/runs/`` trained by ``compare.run_all``
(a finished run is reused, an interrupted one resumed); ``OUT/demo.json`` holds the comparison
and ``OUT/demo.png`` its picture: test top-1 and subset size against epoch, both policies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from ..atomic import atomic_write_text
from ..train.config import TrainConfig

DEMO_RECIPE = "fashion-mnist-tiny_cnn-dap"
POLICIES = ("full", "dap")  # full first: DaP's row reads against it


def demo(base: TrainConfig, out: str | Path, progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train ``base`` as policy full and as policy dap (its seed, everything else equal); write
    ``demo.json`` and ``demo.png`` into ``out`` and return what ``demo.json`` holds."""
    from .compare import aggregate, run_all  # the trainer: imported when training, not with the CLI's parser

    out = Path(out)
    configs = {f"{policy}-seed{base.seed}": base.for_policy(policy)
               for policy in POLICIES}
    rows = aggregate(configs, run_all(configs, out, progress=progress, log=log), out)
    full_seconds = rows["full"]["train_seconds"]
    for row in rows.values():
        row["train_time_vs_full"] = row["train_seconds"] / full_seconds if full_seconds > 0 else None
    picture = out / "demo.png"
    from .plot import plot_demo  # matplotlib, imported only when there is something to draw

    plot_demo(rows, picture, title=f"{base.recipe or base.dataset + ' ' + base.model}, seed {base.seed}")
    result = {"recipe": base.recipe, "seed": base.seed, "picture": str(picture), "policies": rows}
    atomic_write_text(out / "demo.json", json.dumps(result, indent=2) + "\n")
    return result


def demo_table(result: dict) -> str:
    """The comparison as the terminal shows it: one row per policy, then the picture's path.

    Top-1 is the test accuracy after the last epoch; compute is samples trained on / (E x N);
    train time is the epochs' time without evaluation, also as a fraction of full's.
    """
    lines = [f"{'policy':8s} {'final top-1':>12s} {'compute':>8s} {'train time':>11s} {'of full':>8s}"]
    for policy, r in result["policies"].items():
        vs_full = r["train_time_vs_full"]
        lines.append(f"{policy:8s} {r['top1_mean']:11.2f}% {100 * r['compute_fraction']:7.1f}% "
                     f"{r['train_seconds']:9.1f} s {'-' if vs_full is None else f'{100 * vs_full:.0f}%':>8s}")
    dap, full = result["policies"]["dap"], result["policies"]["full"]
    if dap["train_time_vs_full"] is not None:
        lines.append(f"DaP trained on {100 * dap['compute_fraction']:.1f}% of the samples in "
                     f"{100 * dap['train_time_vs_full']:.0f}% of full's training time; its final top-1 is "
                     f"{dap['top1_mean'] - full['top1_mean']:+.2f} points from full's.")
    lines.append(f"picture: {result['picture']} (test top-1 and subset size against epoch, both policies)")
    return "\n".join(lines)
