"""Training on noisy labels (issue 32, parts 4-6): at DaP keep 0.8's compute (44.6%) on the frontier's
20,000-image slice with 20% symmetric, 20% pairs and 40% symmetric noise, full training on the noisy
labels, the paper's DaP, rs2, the budget rule and the rules that keep suspects out of the subsets,
each tuned on a noisy validation split. From the repository root:

    .venv/bin/python experiments/noise_training.py --part tune      # every candidate on the noisy validation split
    .venv/bin/python experiments/noise_training.py --part rows      # the baselines and the chosen rules, 3 seeds
    .venv/bin/python experiments/noise_training.py --part all-data  # full, rs2 and the best rule on all 60,000 images
    .venv/bin/python experiments/noise_training.py --report         # only rewrite the page (noise_report.py)

Setting: the frontier's (experiments/fashion_mnist_frontier.py), ``--label-noise`` R with its kind. The
noise rules run on the budget rule's schedule (what ``--target-compute`` chooses for DaP's compute), so
a win over it is the noise rule's alone: ``trusted`` ranks the share s of samples with the highest mean
loss last at every drop, ``uniform`` ranks last every sample whose mean score (the loss, or the margin
the run then also ranks by) is worse than a uniform guess's (``--trusted-suspects uniform``: nothing to
tune), ``window`` skips the hardest share of each drop's subset, ``rho`` keeps the highest loss less a
holdout model's loss (RHO-LOSS), that model trained for ``rho_epochs`` on the validation split.
Tuning: seed 0, 20,000 training images of a 30,000-image slice with the noise applied before the other
10,000 are held out, so the validation split is as noisy as training; the best final validation top-1
wins. Rows, 3 seeds, test top-1 (the test split stays clean): full, DaP, rs2, the budget rule, the
candidate with the best validation top-1 at that noise setting, and the default, the candidate with
the best mean validation top-1 over the three settings (one rule, since a user does not know their
noise); and on the clean labels the budget rule beside the default. All 60,000 images (2 seeds, at 20%
symmetric and pairs): full, rs2 and the setting's best candidate. The script never reads a tuning
run's test accuracy.

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
from typing import NamedTuple, Optional, Union

import _jobs
from _report import log
from droppick.policies.selective_backprop import FORWARD_COST
from droppick.report.compare import run_configs
from droppick.train.config import TrainConfig

NOISE = {"symmetric-20": (0.2, "symmetric"), "pairs-20": (0.2, "pairs"), "symmetric-40": (0.4, "symmetric")}
CLEAN = {"clean": (0.0, "symmetric")}  # rows only: does the default cost anything where no label is wrong?
KEEP = 0.8  # the budget: DaP's planned compute at this keep
GRID = {"trusted": ("trusted_share", (0.1, 0.2, 0.3)), "uniform": ("score", ("loss", "margin")),
        "window": ("window_skip", (0.05, 0.1, 0.2)), "rho": ("rho_epochs", (2, 5, 10))}
TUNE_VAL, TUNE_SEED = 10_000, 0
BASELINES = ("full", "dap", "rs2", "budget")
ALL_DATA, ALL_SEEDS, ALL_DATA_NOISE = 60_000, [0, 1], ("symmetric-20", "pairs-20")
# The clean labels' budget rule is the budget page's 44.6% row, the same configs: its runs are read there
BUDGET_ROWS: Optional[Path] = Path(__file__).resolve().parent / "fashion-mnist" / "frontier" / "budgets"
Value = Optional[Union[float, str]]


class Rule(NamedTuple):
    noise: str  # a key of NOISE or CLEAN
    rule: str  # one of BASELINES or a key of GRID
    value: Value  # the setting of a GRID rule
    config: TrainConfig

    @property
    def folder(self) -> str:
        return f"{self.noise}/{self.rule}" + ("" if self.value is None else f"-{self.value}")


def rule(base: TrainConfig, noise: str, name: str, value: Value, n: int) -> Rule:
    rate, kind = (NOISE | CLEAN)[noise]
    values = base.to_dict() | {"keep": KEEP, "label_noise": rate, "noise_kind": kind}
    if name == "rho" and values["val_samples"] is None:  # the rows: its holdout split held out as in tuning
        if values["train_samples"] is None:  # all the images: the holdout comes out of them
            values["val_samples"], n = TUNE_VAL, n - TUNE_VAL
        else:
            values |= {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL}
    budget = TrainConfig.from_dict(values).schedule.plan(n).compute_fraction
    if name == "rho":  # the holdout's compute comes out of the budget (module docstring)
        budget -= holdout_fraction(values["val_samples"], value, n, values["epochs"])
    if name in ("budget", *GRID):  # on the budget rule's schedule
        values = TrainConfig.from_dict(values).with_budget(budget, n).to_dict()
    if name != "budget":  # the budget rule's drops (and their settings: with_budget's epsilon) are its own
        values = TrainConfig.from_dict(values).for_policy({"uniform": "trusted"}.get(name, name)).to_dict()
    if name == "uniform":
        values["trusted_suspects"] = "uniform"
    if value is not None:
        values[GRID[name][0]] = value
    return Rule(noise, name, value, TrainConfig.from_dict(values))


def holdout_fraction(val_samples: int, rho_epochs: int, n: int, epochs: int) -> float:
    """rho's holdout in training steps, over the all-data run's: val x rho_epochs trained, N scored."""
    return (val_samples * rho_epochs + FORWARD_COST * n) / (epochs * n)


CANDIDATES = [(name, value) for name, (_, values) in GRID.items() for value in values]


def tuning_rules(base: TrainConfig, n: int) -> list[Rule]:
    tune = TrainConfig.from_dict(base.to_dict() | {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL,
                                                   "seed": TUNE_SEED})
    return [rule(tune, noise, name, value, n) for noise in NOISE for name, value in CANDIDATES]


def val_top1(r: Rule, out: Path) -> Optional[float]:
    path = out / "tuning" / r.folder / "runs" / f"{r.config.policy}-seed{TUNE_SEED}" / "summary.json"
    return json.loads(path.read_text())["final_val_top1"] if path.exists() else None


def validation(base: TrainConfig, n: int, out: Path) -> dict[tuple[str, str, Value], Optional[float]]:
    """Every candidate's noisy validation top-1 by (noise, rule, value); None where not trained yet."""
    return {(r.noise, r.rule, r.value): val_top1(r, out) for r in tuning_rules(base, n)}


def best(base: TrainConfig, n: int, out: Path, noise: str) -> Optional[tuple[str, Value]]:
    """The candidate with the best validation top-1 at ``noise`` (the first of CANDIDATES on a tie),
    None until all are trained."""
    scores = validation(base, n, out)
    at = [scores[noise, name, value] for name, value in CANDIDATES]
    return None if None in at else CANDIDATES[at.index(max(at))]


def default(base: TrainConfig, n: int, out: Path) -> Optional[tuple[str, Value]]:
    """The candidate with the best mean validation top-1 over NOISE (the first on a tie), None until all are trained."""
    scores = validation(base, n, out)
    if None in scores.values():
        return None
    means = [sum(scores[noise, name, value] for noise in NOISE) / len(NOISE) for name, value in CANDIDATES]
    return CANDIDATES[means.index(max(means))]


def chosen(base: TrainConfig, n: int, out: Path, noise: str) -> list[tuple[str, Value]]:
    """The rules of ``noise``'s rows: the baselines (on clean labels the budget rule only), then the
    setting's best candidate and the default, each once they are known (the two may be one)."""
    found = [(name, None) for name in BASELINES] if noise in NOISE else [("budget", None)]
    for pick in (best(base, n, out, noise) if noise in NOISE else None, default(base, n, out)):
        if pick is not None and pick not in found:
            found.append(pick)
    return found


def rows(base: TrainConfig, seeds: list[int], n: int, out: Path) -> list[tuple[Rule, dict, Path]]:
    """Every row rule at every noise setting and on the clean labels, its runs' configs and folder."""
    found = []
    for noise in (*NOISE, *CLEAN):
        for name, value in chosen(base, n, out, noise):
            r = rule(base, noise, name, value, n)
            found.append((r, run_configs(r.config, [r.config.policy], seeds, n), row_folder(r, base, n, out)))
    return found


def row_folder(r: Rule, base: TrainConfig, n: int, out: Path) -> Path:
    """Where a row's runs are: ``out``, but the clean labels' budget rule is ``BUDGET_ROWS``' (module constant)."""
    if (r.noise, r.rule) == ("clean", "budget") and BUDGET_ROWS is not None:
        from frontier_budgets import budget_candidate

        return BUDGET_ROWS / budget_candidate(base, r.config.target_compute, n).folder
    return out / r.folder


def all_data(base: TrainConfig, n: int, out: Path) -> list[tuple[Rule, dict]]:
    """Full, rs2 and the setting's best candidate on all the images, 2 seeds, at ALL_DATA_NOISE."""
    everything = TrainConfig.from_dict(base.to_dict() | {"train_samples": None})
    found = []
    for noise in ALL_DATA_NOISE:
        pick = best(base, n, out, noise)
        for name, value in [("full", None), ("rs2", None)] + ([pick] if pick else []):
            r = rule(everything, noise, name, value, ALL_DATA)
            trained = ALL_DATA - (TUNE_VAL if name == "rho" else 0)
            found.append((r, run_configs(r.config, [r.config.policy], ALL_SEEDS, trained)))
    return found


def jobs(parts: list[str], base: TrainConfig, seeds: list[int], n: int, out: Path) -> _jobs.Jobs:
    found: _jobs.Jobs = []
    if "tune" in parts:
        found += [({f"{r.config.policy}-seed{TUNE_SEED}": r.config}, out / "tuning" / r.folder)
                  for r in tuning_rules(base, n)]
    if "rows" in parts:
        # the clean labels' first: they decide whether the budget rule may take the default (issue 32, part 5)
        found += [(configs, folder) for _, configs, folder in sorted(rows(base, seeds, n, out),
                                                                     key=lambda row: row[0].noise not in CLEAN)]
    if "all-data" in parts:
        found += [(configs, out / "all-60000" / r.folder) for r, configs in all_data(base, n, out)]
    return found


def main() -> None:
    from fashion_mnist_frontier import BASE, N, OUT, SEEDS

    args = _jobs.arguments(__doc__, ["tune", "rows", "all-data"])
    out = OUT.parent / "noise" / "training"
    if not args.report:
        _jobs.train(jobs(args.part, BASE, SEEDS, N, out), *args.share)
    from noise_report import write_page

    log(f"page written to {write_page(BASE, N, SEEDS, out)}")


if __name__ == "__main__":
    main()
