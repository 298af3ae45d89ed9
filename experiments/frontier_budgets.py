"""The budget rule's evidence below 45% compute (issue 31): DaP with a floor, searched beyond the floor
and p, at 35% and 25% compute on the frontier's 20,000-image slice, beside the paper's DaP and rs2 at
the same budgets, and the winner on all 60,000 images. From the repository root:

    .venv/bin/python experiments/frontier_budgets.py --part tune     # every candidate on the validation split
    .venv/bin/python experiments/frontier_budgets.py --part rows     # dap, rs2 and each budget's winner, 3 seeds
    .venv/bin/python experiments/frontier_budgets.py --part all-data # the winner at 35% on all 60,000 images
    .venv/bin/python experiments/frontier_budgets.py --report        # only rewrite the page

Setting: the frontier's (experiments/fashion_mnist_frontier.py): the small CNN, 30 epochs, I = 1, LR /10
after 15 and 22, W = 4 and R = {15} unless a candidate changes them. A candidate is a rule at a budget
C: ``dap`` is the paper's rule with p solved so that the planned compute is C; ``floor`` keeps a floor
``min_keep = f`` and solves p for C under it (``droppick plan --target-compute C --solve keep
--min-keep f``). Beyond the floor and p the grid varies the warm-up W (a short warm-up leaves budget
for a higher floor) and the picks (R = {15, 22}: all data again at the second LR decay too). Each
candidate trains once (seed 0) on 20,000 images of a seeded 30,000-image slice whose other 10,000 are
the validation split; the best final validation top-1 at each budget wins and trains with 3 seeds on
the frontier's slice. The script never reads a tuning run's test accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import NamedTuple, Optional

from droppick.budget import FINE_KEEPS, solve
from _report import log
from droppick.report.compare import run_all, run_configs
from droppick.train.config import TrainConfig

TUNE_VAL = 10_000  # validation images; the tuning slice is N + TUNE_VAL images
TUNE_SEED = 0
ALL_DATA = 60_000
ALL_SEEDS = [0, 1]

# Per budget, (rule, the schedule keys it changes). The floors are spread up to the largest the
# budget allows with that warm-up and picks at p >= 0.3: at 35%, 0.177 with W = 4, 0.245 with W = 2,
# 0.276 with W = 1, 0.13 with R = {15, 22}; at 25%, 0.036 with W = 4, 0.12 with W = 2, 0.156 with
# W = 1, 0.188 with W = 0. The floor's timing is p: a high p falls to the floor over several drops, a
# low one at the first. 0.178 (35%) and 0.059 (25%) are what droppick.budget.for_budget chose from
# the floors tuned at 44.6% and 62.7% alone (share 0.957 of the largest floor, p below 0.3).
GRID: dict[float, list[tuple[str, dict]]] = {
    0.35: [("dap", {}),
           ("floor", {"min_keep": 0.1}), ("floor", {"min_keep": 0.17}), ("floor", {"min_keep": 0.178}),
           ("floor", {"warmup": 2, "min_keep": 0.15}), ("floor", {"warmup": 2, "min_keep": 0.24}),
           ("floor", {"warmup": 1, "min_keep": 0.27}),
           ("floor", {"reuse_at": [15, 22], "min_keep": 0.12})],
    0.25: [("dap", {}), ("dap", {"warmup": 2}), ("floor", {"min_keep": 0.059}),
           ("floor", {"warmup": 2, "min_keep": 0.06}), ("floor", {"warmup": 2, "min_keep": 0.12}),
           ("floor", {"warmup": 1, "min_keep": 0.1}), ("floor", {"warmup": 1, "min_keep": 0.15}),
           ("floor", {"warmup": 0, "min_keep": 0.18})],
}


class Candidate(NamedTuple):
    budget: float  # the target compute C
    rule: str  # "dap", "floor" or "rs2"
    changes: dict  # schedule keys that differ from the frontier's
    config: TrainConfig  # p solved for C; seed and slice still to be set
    folder: str  # its folder's name

    @property
    def setting(self) -> str:
        """The hyper-parameters, as the page names them."""
        parts = [f"W {self.config.warmup}"] if "warmup" in self.changes else []
        parts += [f"R {self.config.reuse_at}"] if "reuse_at" in self.changes else []
        if self.rule == "rs2":
            return "target = C"
        if self.rule == "floor":
            parts.append(f"min_keep {self.config.min_keep}")
        return ", ".join(parts + [f"p {self.config.keep}"])


def candidate(base: TrainConfig, budget: float, rule: str, changes: dict, n: int) -> Candidate:
    """One rule at one budget on ``n`` training samples: p solved so the planned compute is ``budget``
    (rs2 matches the paper's DaP at that budget, as ``run_configs`` matches it)."""
    values = base.to_dict() | changes | {"policy": "rs2" if rule == "rs2" else "dap"}
    schedule = TrainConfig.from_dict(values).schedule
    solved, _ = solve(schedule, n, budget, "keep", FINE_KEEPS)
    cfg = TrainConfig.from_dict(values | {"keep": solved.keep})
    name = "-".join([f"c{budget}", rule] + [f"{k}-{v}" if not isinstance(v, list) else f"{k}-{'-'.join(map(str, v))}"
                                            for k, v in sorted(changes.items())])
    return Candidate(budget, rule, changes, cfg, name)


def tuning_candidates(base: TrainConfig, n: int) -> list[Candidate]:
    tune = TrainConfig.from_dict(base.to_dict() | {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL,
                                                   "seed": TUNE_SEED})
    return [candidate(tune, budget, rule, changes, n) for budget, grid in GRID.items() for rule, changes in grid]


def tuning_configs(c: Candidate, n: int) -> dict[str, TrainConfig]:
    return run_configs(c.config, [c.config.policy], [TUNE_SEED], n)


def val_top1(c: Candidate, tuning: Path, n: int) -> Optional[float]:
    """The final validation top-1 of a tuning run, None while it is unfinished."""
    (name,) = tuning_configs(c, n)
    path = tuning / c.folder / "runs" / name / "summary.json"
    return json.loads(path.read_text())["final_val_top1"] if path.exists() else None


def winner(candidates: list[Candidate], budget: float, tuning: Path, n: int) -> Optional[Candidate]:
    """The candidate with the best validation top-1 at this budget (the first in the grid on a tie),
    None until all of them are trained."""
    scored = [(val_top1(c, tuning, n), c) for c in candidates if c.budget == budget]
    if any(score is None for score, _ in scored):
        return None
    return max(scored, key=lambda sc: sc[0])[1]


def rows(base: TrainConfig, seeds: list[int], n: int, out: Path) -> list[tuple[Candidate, Optional[dict]]]:
    """Per budget: the paper's DaP, rs2, and the validation winner (None while tuning is unfinished),
    each with its configs, one per seed."""
    tuning = tuning_candidates(base, n)
    out_rows = []
    for budget in GRID:
        for c in (candidate(base, budget, "dap", {}, n), candidate(base, budget, "rs2", {}, n)):
            out_rows.append((c, run_configs(c.config, [c.config.policy], seeds, n)))
        best = winner(tuning, budget, out / "tuning", n)
        if best is not None and (best.rule, best.changes) != ("dap", {}):  # else it is the row above
            final = candidate(base, budget, best.rule, best.changes, n)
            out_rows.append((final, run_configs(final.config, [final.config.policy], seeds, n)))
    return out_rows


def all_data_rows(base: TrainConfig, n: int, out: Path) -> list[tuple[Candidate, dict]]:
    """The winner at 35% on all 60,000 images, 2 seeds (nothing while tuning is unfinished); a floor
    keeps its f and re-solves p for the larger N."""
    best = winner(tuning_candidates(base, n), 0.35, out / "tuning", n)
    if best is None:
        return []
    everything = TrainConfig.from_dict(base.to_dict() | {"train_samples": None})
    c = candidate(everything, 0.35, best.rule, best.changes, ALL_DATA)
    return [(c, run_configs(c.config, [c.config.policy], ALL_SEEDS, ALL_DATA))]


def share(items: list, index: int, of: int) -> list:
    """Every ``of``-th item from ``index``: disjoint shares for processes that train side by side."""
    return items[index::of]


def train_missing(parts: list[str], index: int, of: int) -> None:
    from fashion_mnist_frontier import BASE, N, OUT, SEEDS

    out = OUT / "budgets"
    jobs: list[tuple[dict, Path]] = []
    if "tune" in parts:
        jobs += [(tuning_configs(c, N), out / "tuning" / c.folder) for c in tuning_candidates(BASE, N)]
    if "rows" in parts:
        jobs += [(configs, out / c.folder) for c, configs in rows(BASE, SEEDS, N, out)]
    if "all-data" in parts:
        jobs += [(configs, out / "all-60000" / c.folder) for c, configs in all_data_rows(BASE, N, out)]
    runs = [({name: cfg}, folder) for configs, folder in jobs for name, cfg in configs.items()]
    for configs, folder in share(runs, index, of):
        run_all(configs, folder, log=log)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="only rewrite the page from the runs that exist")
    p.add_argument("--part", choices=["tune", "rows", "all-data"], action="append",
                   help="train this part (repeatable): 'rows' and 'all-data' train a winner once its budget's "
                        "tuning runs are done")
    p.add_argument("--share", default="0/1", metavar="I/K",
                   help="train only every K-th run from the I-th, so K processes can train side by side")
    args = p.parse_args()
    index, of = (int(x) for x in args.share.split("/"))
    if not args.report:
        train_missing(args.part or ["tune"], index, of)


if __name__ == "__main__":
    main()
