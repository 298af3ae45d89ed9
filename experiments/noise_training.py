"""Training on noisy labels (issue 32, parts 4-6): at DaP keep 0.8's compute (44.6%) on the frontier's
20,000-image slice with 20% symmetric, 20% pairs and 40% symmetric noise, full training on the noisy
labels, the paper's DaP, rs2, the budget rule and the three rules that keep suspects out of the subsets,
each tuned on a noisy validation split. From the repository root:

    .venv/bin/python experiments/noise_training.py --part tune   # window, trusted, rho on the noisy validation split
    .venv/bin/python experiments/noise_training.py --part rows   # every rule, 3 seeds, at each noise setting
    .venv/bin/python experiments/noise_training.py --report      # only rewrite the page

Setting: the frontier's (experiments/fashion_mnist_frontier.py), ``--label-noise`` R with its kind. The
noise rules run on the budget rule's schedule (what ``--target-compute`` chooses for DaP's compute), so
a win over it is the noise rule's alone: ``trusted`` ranks the share s of samples with the highest mean
loss last at every drop, ``window`` skips the hardest share of each drop's subset, ``rho`` keeps the highest
loss less a holdout model's loss (RHO-LOSS), that model trained for ``rho_epochs`` on the validation split.
Tuning: seed 0, 20,000 training images of a 30,000-image slice with the noise applied before the other
10,000 are held out, so the validation split is as noisy as training; the best final validation top-1
wins. The test split stays clean. The script never reads a tuning run's test accuracy.

rho's holdout is that noisy validation split, in tuning and in the rows (each seed's 30,000-image slice,
10,000 held out: rho sees 10,000 noisy labels the other rules' 20,000-image slice lacks, for its holdout
model only; its validation top-1 is read beside a split its ranking learnt from, so it ranks rho's own
settings, not rho against the others). Its holdout costs compute: val x rho_epochs samples trained and N
scored at a third of a step, taken out of the budget its schedule gets, so its step-equivalents (the
summary's ``step_equivalent_fraction``) match the others' compute.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Optional

import _jobs
from _report import log
from droppick.policies.selective_backprop import FORWARD_COST
from droppick.report.compare import run_configs
from droppick.train.config import TrainConfig

NOISE = {"symmetric-20": (0.2, "symmetric"), "pairs-20": (0.2, "pairs"), "symmetric-40": (0.4, "symmetric")}
KEEP = 0.8  # the budget: DaP's planned compute at this keep
GRID = {"trusted": ("trusted_share", (0.1, 0.2, 0.3)), "window": ("window_skip", (0.05, 0.1, 0.2)),
        "rho": ("rho_epochs", (2, 5, 10))}
TUNE_VAL, TUNE_SEED = 10_000, 0
RULES = ("full", "dap", "rs2", "budget", "trusted", "window", "rho")


class Rule(NamedTuple):
    noise: str  # a key of NOISE
    rule: str  # one of RULES
    value: Optional[float]  # the tuned setting of trusted, window and rho
    config: TrainConfig

    @property
    def folder(self) -> str:
        return f"{self.noise}/{self.rule}" + ("" if self.value is None else f"-{self.value}")


def rule(base: TrainConfig, noise: str, name: str, value: Optional[float], n: int) -> Rule:
    rate, kind = NOISE[noise]
    values = base.to_dict() | {"keep": KEEP, "label_noise": rate, "noise_kind": kind}
    if name == "rho" and values["val_samples"] is None:  # the rows: its holdout split held out as in tuning
        values |= {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL}
    budget = TrainConfig.from_dict(values).schedule.plan(n).compute_fraction
    if name == "rho":  # the holdout's compute comes out of the budget (module docstring)
        budget -= holdout_fraction(values["val_samples"], value, n, values["epochs"])
    if name in ("budget", "trusted", "window", "rho"):  # on the budget rule's schedule
        values = TrainConfig.from_dict(values).with_budget(budget, n).to_dict()
    policy = {"budget": "dap"}.get(name, name)
    values["policy"] = policy
    if value is not None:
        values[GRID[name][0]] = value
    return Rule(noise, name, value, TrainConfig.from_dict(values))


def holdout_fraction(val_samples: int, rho_epochs: int, n: int, epochs: int) -> float:
    """rho's holdout in training steps, over the all-data run's: val x rho_epochs trained, N scored."""
    return (val_samples * rho_epochs + FORWARD_COST * n) / (epochs * n)


def tuning_rules(base: TrainConfig, n: int) -> list[Rule]:
    tune = TrainConfig.from_dict(base.to_dict() | {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL,
                                                   "seed": TUNE_SEED})
    return [rule(tune, noise, name, value, n) for noise in NOISE for name, (_, values) in GRID.items() for value in values]


def val_top1(r: Rule, out: Path) -> Optional[float]:
    path = out / "tuning" / r.folder / "runs" / f"{r.config.policy}-seed{TUNE_SEED}" / "summary.json"
    return json.loads(path.read_text())["final_val_top1"] if path.exists() else None


def tuned(base: TrainConfig, n: int, out: Path, noise: str, name: str) -> Optional[float]:
    """The setting of ``name`` with the best noisy-validation top-1 at ``noise``, None until all are trained."""
    group = [r for r in tuning_rules(base, n) if r.noise == noise and r.rule == name]
    scores = [val_top1(r, out) for r in group]
    return None if None in scores else group[scores.index(max(scores))].value


def rows(base: TrainConfig, seeds: list[int], n: int, out: Path) -> list[tuple[Rule, dict]]:
    """Every rule at every noise setting, the tuned ones once tuned."""
    found = []
    for noise in NOISE:
        for name in RULES:
            value = tuned(base, n, out, noise, name) if name in GRID else None
            if name in GRID and value is None:
                continue
            r = rule(base, noise, name, value, n)
            found.append((r, run_configs(r.config, [r.config.policy], seeds, n)))
    return found


def main() -> None:
    from fashion_mnist_frontier import BASE, N, OUT, SEEDS

    args = _jobs.arguments(__doc__, ["tune", "rows"])
    out = OUT.parent / "noise" / "training"
    if not args.report:
        jobs: _jobs.Jobs = [({f"{r.config.policy}-seed{TUNE_SEED}": r.config}, out / "tuning" / r.folder)
                            for r in tuning_rules(BASE, N)] if "tune" in args.part else []
        jobs += [(configs, out / r.folder) for r, configs in rows(BASE, SEEDS, N, out)] if "rows" in args.part else []
        _jobs.train(jobs, *args.share)
    lines = ["# Training on noisy labels", "", "| noise | rule | setting | noisy val top-1 |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {r.noise} | {r.rule} | {r.value} | {val_top1(r, out) or 'not trained yet'} |" for r in tuning_rules(BASE, N)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("\n".join(lines) + "\n")
    log(f"page written to {out / 'README.md'}")


if __name__ == "__main__":
    main()
