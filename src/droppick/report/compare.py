"""``droppick compare``: every policy on the same recipe and seeds, at DaP's compute, in one report.

Each (policy, seed) run is an ordinary run directory under ``OUT/runs/``; a finished run (one
with a summary) is never rerun and an interrupted one is resumed, so a long comparison can be
built over several sessions by calling the same command again.

Matching compute (Table 2f): ``scaled``, ``static`` and ``rs2`` match the DaP plan's compute exactly
(``policies.Scaled``, ``policies.Static`` and ``policies.RS2`` derive their epochs / subset size
from it; ``epsilon`` and ``ema`` follow DaP's schedule itself). InfoBatch's compute depends on the
losses, so its runs get the target explicitly (``target_compute``) and ``policies.InfoBatch``
calibrates its prune ratio after every epoch from the losses it observed; the report shows the
compute each run really used.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Optional

from ..train.config import TrainConfig
from ..train.rundir import RunDir
from ..train.trainer import train

def run_configs(base: TrainConfig, policies: list[str], seeds: list[int], num_samples: int) -> dict[str, TrainConfig]:
    """One config per (policy, seed), named like ``dap-seed0``, all matched to the DaP plan's compute."""
    target = base.schedule.plan(num_samples).compute_fraction
    out = {}
    for policy in policies:
        for seed in seeds:
            values = base.for_policy(policy).to_dict() | {"seed": seed}
            if policy in ("infobatch", "seta") and base.target_compute is None:
                values["target_compute"] = target  # they calibrate to an explicit target only
            out[f"{policy}-seed{seed}"] = TrainConfig.from_dict(values)
    return out


def run_all(configs: dict[str, TrainConfig], out: Path, progress: bool = False,
            log: Callable[[str], None] = print) -> dict[str, dict]:
    """Train every config that has no summary yet (resuming interrupted ones); return summaries."""
    summaries = {}
    for name, cfg in configs.items():
        run = RunDir(out / "runs" / name)
        if run.config_path.exists():
            _check_same_run(run, cfg)
        if run.summary_path.exists():
            log(f"{name}: done, reusing {run.summary_path}")
        else:
            resume = run.config_path.exists()  # a run of ours, perhaps stopped before its first checkpoint
            log(f"{name}: {'resuming' if run.checkpoints() else 'training'}")
            train(None if resume else cfg, run.path, resume=resume, progress=progress)
        summaries[name] = json.loads(run.summary_path.read_text())
    return summaries


def _check_same_run(run: RunDir, cfg: TrainConfig) -> None:
    """A run directory is reused only for the configuration it was made with (the settings its policy
    reads: a saved one of another policy's, which it ignored, does not count)."""
    from ..train.config import training_differences

    saved, wanted = TrainConfig().to_dict() | json.loads(run.config_path.read_text()), cfg.to_dict()
    differ = [k for k in training_differences(saved, wanted) if k != "device"]
    if differ:
        raise ValueError(f"{run.path} was made with other settings ({', '.join(f'{k}={saved.get(k)!r}' for k in differ)}, "
                         f"now {', '.join(f'{k}={wanted[k]!r}' for k in differ)}): delete it or choose another --out")


def aggregate(configs: dict[str, TrainConfig], summaries: dict[str, dict], out: Path) -> dict:
    """Per-policy means over seeds, and per-epoch curves for the plots."""
    by_policy: dict[str, list[str]] = {}
    for name, cfg in configs.items():
        by_policy.setdefault(cfg.policy, []).append(name)
    rows = {}
    for policy, names in by_policy.items():
        s = [summaries[n] for n in names]
        metrics = [RunDir(out / "runs" / n).read_metrics() for n in names]
        top1 = [x["final_test_top1"] for x in s]
        rows[policy] = {
            "runs": names,
            "seeds": len(names),
            "compute_fraction": statistics.fmean(x["compute_fraction"] for x in s),
            "planned_compute_fraction": statistics.fmean(x["planned_compute_fraction"] for x in s),
            "train_seconds": statistics.fmean(x["train_seconds"] for x in s),
            "wall_seconds": statistics.fmean(x["wall_seconds"] for x in s),
            "top1_mean": statistics.fmean(top1),
            "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "top1_per_seed": top1,
            "best_top1_mean": statistics.fmean(x["best_test_top1"] for x in s),
            "epoch_top1": [None if None in col else statistics.fmean(col)  # None: not evaluated (--eval-every)
                           for col in zip(*[[r["test_top1"] for r in m] for m in metrics])],
            "epoch_subset": [r["subset_size"] for r in metrics[0]],
        }
        for key in ("backprop_fraction", "step_equivalent_fraction"):  # Selective Backprop's spend (train/summary.py)
            if all(key in x for x in s):
                rows[policy][key] = statistics.fmean(x[key] for x in s)
    if "full" in rows:
        for row in rows.values():
            row["top1_vs_full"] = row["top1_mean"] - rows["full"]["top1_mean"]
    return rows


def write_report(rows: dict, out: Path, title: str, preamble: str = "") -> Path:
    """report.md, report.json and the three PNG plots in ``out``."""
    from .plot import plot_compare

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(rows, indent=2) + "\n")
    plots = plot_compare(rows, out)
    lines = [f"# {title}", "", preamble, "",
             "| policy | seeds | compute (measured) | train time (s) | wall time (s) | final top-1 (%) | vs full |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for policy, r in rows.items():
        vs = r.get("top1_vs_full")
        lines.append(f"| {policy} | {r['seeds']} | {100 * r['compute_fraction']:.1f}% | {r['train_seconds']:.0f} | "
                     f"{r['wall_seconds']:.0f} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | "
                     f"{'' if vs is None else f'{vs:+.2f}'} |")
    lines += ["", "Top-1 is the test accuracy after the last epoch, mean ± sample standard deviation over seeds; "
              "compute is samples trained on / (epochs x N) of the full run's schedule; train time excludes evaluation.",
              ""] + [f"![{p.stem}]({p.name})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def compare(base: TrainConfig, policies: list[str], seeds: list[int], out: str | Path, num_samples: int,
            title: Optional[str] = None, preamble: str = "", progress: bool = False,
            log: Callable[[str], None] = print) -> dict:
    out = Path(out)
    configs = run_configs(base, policies, seeds, num_samples)
    summaries = run_all(configs, out, progress=progress, log=log)
    rows = aggregate(configs, summaries, out)
    write_report(rows, out, title or f"{base.recipe or base.dataset + ' ' + base.model}: policies at matched compute",
                 preamble)
    return rows


def dataset_size(cfg: TrainConfig) -> int:
    """N of the training split as the trainer will see it (slices included), without a model."""
    from ..train.splits import build_splits

    return len(build_splits(cfg)[0]) - (cfg.val_samples or 0)  # --val-samples: held out of training

