"""A finished run's summary.json: what reports and ``compare`` read without opening the metrics."""

from __future__ import annotations

import torch

from .irreducible import holdout_summary
from .rundir import RunDir, code_version

# The code this process runs is the code it imported: a process that trains run after run (the
# experiment scripts) while the checkout moves on would otherwise name a later commit than it ran.
LOADED_CODE = code_version()


def run_summary(t, history: list[dict], run: RunDir, wall_seconds: float, device: torch.device) -> dict:
    """The summary of the run that ``t`` (a ``Trainer``) has just finished, from its per-epoch
    ``history`` (metrics.jsonl's rows, resumed epochs included)."""
    cfg, dap = t.cfg, t.dap
    summary = {
        "policy": cfg.policy, "seed": cfg.seed, "model": cfg.model, "dataset": cfg.dataset, "recipe": cfg.recipe,
        "epochs": cfg.epochs, "num_train_samples": len(t.train_split), "num_test_samples": len(t.test_split),
        "final_test_top1": history[-1]["test_top1"], "final_test_top5": history[-1]["test_top5"],
        "final_test_balanced_top1": history[-1].get("test_balanced_top1"),  # absent in rows written before it
        "best_test_top1": max(m["test_top1"] for m in history if m["test_top1"] is not None),
        "compute_fraction": dap.compute_fraction, "planned_compute_fraction": dap.plan().compute_fraction,
        "samples_seen": dap.samples_seen, "train_seconds": sum(m["epoch_seconds"] for m in history),
        "wall_seconds": wall_seconds, "device": str(device),
        "world_size": t.world, "world_size_changes": t.world_size_changes,
        "excluded_nonfinite": run.count_listed(run.nonfinite_path),
        "unreadable_skipped": run.count_listed(run.unreadable_path),
        "code": LOADED_CODE,
    }
    if "step_equivalents" in history[-1]:  # Selective Backprop: what it really spent, beside samples forwarded
        full = t.dap.plan().full_samples
        summary.update(backprop_fraction=sum(m["samples_backprop"] for m in history) / full,
                       step_equivalent_fraction=sum(m["step_equivalents"] for m in history) / full)
    if cfg.policy == "rho":  # its holdout model's training and scoring: extra compute, in step-equivalents
        summary.update(holdout_summary(t, history))
    if t.val_split is not None:  # --val-samples
        summary.update(num_val_samples=len(t.val_split), final_val_top1=history[-1]["val_top1"],
                       best_val_top1=max(m["val_top1"] for m in history if m["val_top1"] is not None))
    return summary
