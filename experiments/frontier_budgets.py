"""The budget rule's evidence below 45% compute (issue 31): DaP with a floor, searched beyond the floor
and p, at 35% and 25% compute on the frontier's 20,000-image slice, beside the paper's DaP and rs2 at
the same budgets, and the winner on all 60,000 images. From the repository root:

    .venv/bin/python experiments/frontier_budgets.py --part tune     # every candidate on the validation split
    .venv/bin/python experiments/frontier_budgets.py --part rows     # the budget rule, dap, rs2, winners: 3 seeds
    .venv/bin/python experiments/frontier_budgets.py --part all-data # the budget rule at 35% on all 60,000 images
    .venv/bin/python experiments/frontier_budgets.py --part regimes  # scarce and long-tailed data (budget_regimes.py)
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

import dataclasses
import statistics
from pathlib import Path
from typing import NamedTuple, Optional

import _jobs
import budget_regimes
import frontier_beyond
from _report import log
from droppick.report.compare import run_configs
from droppick.budget import RANDOM_SHARE
from droppick.schedule import FLOOR_SHARE, MIN_FLOOR, WARMUP_SHARE, closest_keep, largest_floor
from droppick.train.config import TrainConfig

TUNE_VAL = 10_000  # validation images; the tuning slice is N + TUNE_VAL images
TUNE_SEED = 0
ALL_DATA = 60_000
ALL_SEEDS = [0, 1]
PAPER_KEEPS = (0.8, 0.9)  # the frontier's tuned budgets (frontier_beyond.py): DaP keep 0.8's and 0.9's compute

# Per budget, (rule, the schedule keys it changes). The floors are spread up to the largest the
# budget allows with that warm-up and picks at p >= 0.3: at 35%, 0.177 with W = 4, 0.245 with W = 2,
# 0.276 with W = 1, 0.13 with R = {15, 22}; at 25%, 0.036 with W = 4, 0.12 with W = 2, 0.156 with
# W = 1, 0.188 with W = 0. The floor's timing is p: a high p falls to the floor over several drops, a
# low one at the first. 0.178 (35%) and 0.059 (25%) are what droppick.schedule.for_budget chose from
# the floors tuned at 44.6% and 62.7% alone (share 0.957 of the largest floor, p below 0.3). W = 3
# at 35% (0.21, near its largest floor 0.22) was added once W = 2 had won there, to place the
# warm-up threshold between the winner's warm-up and the next longer one (the rule's first form shortened the
# warm-up until the largest floor reached a threshold; the fit left no such threshold, see the page).
GRID: dict[float, list[tuple[str, dict]]] = {
    0.35: [("dap", {}),
           ("floor", {"min_keep": 0.1}), ("floor", {"min_keep": 0.17}), ("floor", {"min_keep": 0.178}),
           ("floor", {"warmup": 3, "min_keep": 0.21}), ("dap", {"warmup": 2}),
           ("floor", {"warmup": 2, "min_keep": 0.15}), ("floor", {"warmup": 2, "min_keep": 0.24}),
           ("floor", {"warmup": 1, "min_keep": 0.27}),
           ("floor", {"reuse_at": [15, 22], "min_keep": 0.12})],
    0.25: [("dap", {}), ("dap", {"warmup": 2}), ("floor", {"min_keep": 0.059}),
           ("floor", {"warmup": 2, "min_keep": 0.06}), ("floor", {"warmup": 2, "min_keep": 0.12}),
           ("floor", {"warmup": 1, "min_keep": 0.1}), ("floor", {"warmup": 1, "min_keep": 0.15}),
           ("floor", {"warmup": 0, "min_keep": 0.18})],
}


# At DaP keep 0.8's and 0.9's compute frontier_beyond.py tuned floors at the frontier's W = 4 only.
# Once W = 2 had won at 25% and 35%, the same warm-up joins there too (DaP, and a floor near W = 2's
# largest, 0.361 and 0.569): whether the rule shortens the warm-up at every budget or only at low ones.
SHORT_WARMUP: dict[float, list[tuple[str, dict]]] = {
    0.8: [("dap", {"warmup": 2}), ("floor", {"warmup": 2, "min_keep": 0.35})],
    0.9: [("dap", {"warmup": 2}), ("floor", {"warmup": 2, "min_keep": 0.55})],
}


# At 25%, where rs2 beat every DaP form on validation (84.83 against 83.81), challengers of the DaP
# forms: epsilon-greedy drops (policies/epsilon.py: a share epsilon of each drop's keep drawn at
# random from the rest), so the subset mixes the hardest with random ones as rs2's does. Once W 2
# with eps 0.8 had scored 85.26 at 25% (rs2 84.83), the same two at 35%: whether the random share
# helps only where the subset gets small (it lost to the floor there). The epsilon form then became
# one of the rule's (droppick.budget.rule_policy: its drops where there is no floor), and two more
# joined at 25% to place its random share and warm-up: eps 0.9 at W 2, eps 0.8 at W 1.
CHALLENGERS: dict[float, list[tuple[str, dict]]] = {
    0.25: [("epsilon", {"warmup": 2, "epsilon": 0.5}), ("epsilon", {"warmup": 2, "epsilon": 0.8}),
           ("epsilon", {"warmup": 0, "epsilon": 0.5}), ("epsilon", {"warmup": 2, "epsilon": 0.9}),
           ("epsilon", {"warmup": 1, "epsilon": 0.8})],
    0.35: [("epsilon", {"warmup": 2, "epsilon": 0.5}), ("epsilon", {"warmup": 2, "epsilon": 0.8})],
}


# Rows trained on the frontier's slice before the grid grew past them: still shown, beside the rule.
FORMER: dict[float, list[tuple[str, dict]]] = {0.25: [("epsilon", {"warmup": 2, "epsilon": 0.8})]}


REFERENCES = ("rs2",)  # rules the tuning shows beside the rule's forms, never the rule's winner
DAP_FORMS = ("dap", "floor")  # the rule's forms with DaP's drops; "epsilon" is its form without a floor


# At 25% rs2's validation run beat the winner's by 1.02, one seed each, and the best epsilon challenger
# beat rs2 by 0.43: the three train two seeds more on the validation setting, so the verdicts there
# rest on three seeds a side.
CLOSE_CALL, CLOSE_CALL_SEEDS = 0.25, [0, 1, 2]


class Candidate(NamedTuple):
    budget: float  # the target compute C
    rule: str  # "dap", "floor", "epsilon", one of REFERENCES; in rows also "budget", "budget-dap", "former"
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
        if self.config.policy == "epsilon":
            parts.append(f"eps {self.config.epsilon}")
        if self.rule == "floor" or self.config.min_keep:
            parts.append(f"min_keep {self.config.min_keep}")
        return ", ".join(parts + [f"p {self.config.keep}"])


def candidate(base: TrainConfig, budget: float, rule: str, changes: dict, n: int) -> Candidate:
    """One rule at one budget on ``n`` training samples: p solved so the planned compute is ``budget``
    (rs2 matches the paper's DaP at that budget, as ``run_configs`` matches it)."""
    values = base.to_dict() | changes | {"policy": "dap" if rule in DAP_FORMS else rule}
    solved = closest_keep(TrainConfig.from_dict(values).schedule, n, budget)
    cfg = TrainConfig.from_dict(values | {"keep": solved.keep})
    name = "-".join([f"c{budget}", rule] + [f"{k}-{v}" if not isinstance(v, list) else f"{k}-{'-'.join(map(str, v))}"
                                            for k, v in sorted(changes.items())])
    return Candidate(budget, rule, changes, cfg, name)


def tuning_candidates(base: TrainConfig, n: int) -> list[Candidate]:
    tune = TrainConfig.from_dict(base.to_dict() | {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL,
                                                   "seed": TUNE_SEED})
    found = [candidate(tune, budget, rule, changes, n) for budget, grid in GRID.items() for rule, changes in grid]
    found += [candidate(tune, paper_budget(base, keep, n), rule, changes, n)
              for keep, grid in SHORT_WARMUP.items() for rule, changes in grid]
    found += [candidate(tune, budget, "rs2", {}, n) for budget in GRID]  # references, never a winner
    return found + [candidate(tune, budget, rule, changes, n) for budget, grid in CHALLENGERS.items()
                    for rule, changes in grid]


def close_call(base: TrainConfig, n: int, out: Path) -> list[tuple[Candidate, dict]]:
    """The best of DaP's forms, rs2 and the best epsilon form at ``CLOSE_CALL`` on the validation
    setting, with ``CLOSE_CALL_SEEDS`` (seed 0 is their tuning run); empty until all are known."""
    candidates = tuning_candidates(base, n)
    best = [winner(candidates, CLOSE_CALL, out / "tuning", n, forms) for forms in (DAP_FORMS, ("epsilon",))]
    rs2 = [c for c in candidates if (c.budget, c.rule) == (CLOSE_CALL, "rs2")]
    if None in best:
        return []
    return [(c, run_configs(c.config, [c.config.policy], CLOSE_CALL_SEEDS, n)) for c in [best[0], *rs2, best[1]]]


def paper_budget(base: TrainConfig, keep: float, n: int) -> float:
    """The planned compute of the paper's DaP at ``keep`` on the frontier's schedule, to 4 decimals
    (a folder's name; 0.4464 and 0.6267)."""
    return round(TrainConfig.from_dict(base.to_dict() | {"keep": keep}).schedule.plan(n).compute_fraction, 4)


# A tuning run and its score are read as the frontier's own tuning reads them (same seed, same layout)
tuning_configs, val_top1 = frontier_beyond.tuning_configs, frontier_beyond.val_top1
assert frontier_beyond.TUNE_SEED == TUNE_SEED


def winner(candidates: list[Candidate], budget: float, tuning: Path, n: int,
           forms: tuple = DAP_FORMS + ("epsilon",)) -> Optional[Candidate]:
    """The candidate of one of the rule's ``forms`` with the best validation top-1 at this budget (the
    first in the grid on a tie), None until all of them are trained. rs2's validation run is the page's
    reference, never a winner: the page says where it scores higher."""
    scored = [(val_top1(c, tuning, n), c) for c in candidates if c.budget == budget and c.rule in forms]
    if any(score is None for score, _ in scored):
        return None
    return max(scored, key=lambda sc: sc[0])[1]


def budget_candidate(base: TrainConfig, budget: float, n: int, dap_drops: bool = False) -> Candidate:
    """What ``--target-compute budget`` chooses on the frontier's schedule: the budget rule's floor, p
    and drops; with ``dap_drops`` its schedule with DaP's drops (``--policy dap``: the rule's first form)."""
    cfg = TrainConfig.from_dict(base.to_dict() | {"policy": "dap"}).with_budget(budget, n, fixed_policy=dap_drops)
    changes = {"min_keep": cfg.min_keep} | ({"warmup": cfg.warmup} if cfg.warmup != base.warmup else {})
    return Candidate(budget, "budget-dap" if dap_drops else "budget", changes, cfg, f"c{budget:.4g}-budget")


def rule_budgets(base: TrainConfig, n: int) -> list[float]:
    """The budgets of the README's table: 25% and 35%, and the compute of DaP's keep 0.8 and 0.9."""
    return list(GRID) + [TrainConfig.from_dict(base.to_dict() | {"keep": keep}).schedule.plan(n).compute_fraction
                         for keep in PAPER_KEEPS]


def rows(base: TrainConfig, seeds: list[int], n: int, out: Path) -> list[tuple[Candidate, dict]]:
    """Per budget, the budget rule (once its constants are the fit of the finished tuning runs) and,
    where its drops are epsilon-greedy, its schedule with DaP's drops; at 25% and 35% also the paper's
    DaP, rs2, the validation winner and the ``FORMER`` rows. A rule whose runs another row trains (same
    schedule and drops) reads that row's runs. (At 44.6% and 62.7% the frontier has DaP's and rs2's rows.)"""
    tuning = tuning_candidates(base, n)
    final = rule_is_final(base, n, out)
    out_rows = []
    for budget in rule_budgets(base, n):
        picked = []
        if budget in GRID:
            picked += [candidate(base, budget, "dap", {}, n), candidate(base, budget, "rs2", {}, n)]
            best = winner(tuning, budget, out / "tuning", n)
            if best is not None and (best.rule, best.changes) != ("dap", {}):
                picked.append(candidate(base, budget, best.rule, best.changes, n))
            former = [candidate(base, budget, form, changes, n)._replace(rule="former")
                      for form, changes in FORMER.get(budget, [])]
            picked += [c for c in former if not any(same(c, x) for x in picked)]
        rule = budget_candidate(base, budget, n)
        if final:
            twin = next((c for c in picked if same(c, rule)), None)
            picked = [rule if twin is None else twin._replace(rule="budget")] + [c for c in picked if c is not twin]
            if rule.config.policy != "dap":
                picked.append(budget_candidate(base, budget, n, dap_drops=True))
        out_rows += [(c, run_configs(c.config, [c.config.policy], seeds, n)) for c in picked]
    return out_rows


def same(a: Candidate, b: Candidate) -> bool:
    """Whether two candidates train the same runs (their schedules and drops are equal)."""
    def drops(c: Candidate) -> tuple:
        return c.config.schedule, c.config.policy, c.config.epsilon if c.config.policy == "epsilon" else None
    return drops(a) == drops(b)


def all_data_rows(base: TrainConfig, n: int, out: Path) -> list[tuple[Candidate, dict]]:
    """The budget rule at 35% on all 60,000 images, 2 seeds, once the rule is final (p re-solved for
    the larger N, as ``--target-compute`` does)."""
    if not rule_is_final(base, n, out):
        return []
    everything = TrainConfig.from_dict(base.to_dict() | {"train_samples": None})
    c = budget_candidate(everything, 0.35, ALL_DATA)
    return [(c, run_configs(c.config, [c.config.policy], ALL_SEEDS, ALL_DATA))]


class Tuned(NamedTuple):
    """A budget's validation winner, as the budget rule's fit reads it."""
    budget: float
    setting: str  # as the page names it
    floor: float  # its min_keep (0 for a winner without a floor)
    largest: float  # the largest floor its schedule allows at this budget
    warmup: int
    at_rule_warmup: float  # the largest floor at this budget with the fitted warm-up (fitted_warmup_share)
    epsilon: float  # its drops' random share: 0 for DaP's drops


def tuned_floors(base: TrainConfig, n: int, out: Path) -> Optional[list[Tuned]]:
    """The winner at every tuned budget: 44.6% and 62.7% from frontier_beyond's tuning (floors at the
    frontier's W), 25% and 35% from this script's; None until every tuning run is trained."""
    points = []  # (budget, the winner's setting, its config)
    candidates = tuning_candidates(base, n)
    beyond_tuning = out.parent / "beyond" / "tuning"
    for keep in PAPER_KEEPS:  # frontier_beyond's DaP and floors (W = 4) against this script's W = 2 ones
        theirs = [c for c in frontier_beyond.tuning_candidates(base, n) if c.keep == keep and c.rule in ("dap", "floor")]
        ours = [c for c in candidates if c.budget == paper_budget(base, keep, n)]
        scored = [(val_top1(c, beyond_tuning, n), c) for c in theirs] + [(val_top1(c, out / "tuning", n), c) for c in ours]
        if any(score is None for score, _ in scored):
            return None
        best = max(scored, key=lambda sc: sc[0])[1]  # the first of equal scores: frontier_beyond's
        compute = dataclasses.replace(base.schedule, keep=keep).plan(n).compute_fraction
        points.append((compute, best.setting, best.config))
    for budget in GRID:
        best = winner(candidates, budget, out / "tuning", n)
        if best is None:
            return None
        points.append((budget, best.setting, best.config))
    rule = dataclasses.replace(base.schedule, warmup=int(fitted_warmup_share([c for *_, c in points], base.warmup)
                                                         * base.warmup))
    return sorted(Tuned(budget, setting, c.min_keep, largest_floor(c.schedule, n, budget), c.warmup,
                        largest_floor(rule, n, budget), c.epsilon if c.policy == "epsilon" else 0.0)
                  for budget, setting, c in points)


def fitted_warmup_share(points: list, given: int) -> float:
    """The budget rule's WARMUP_SHARE: the share of the frontier's warm-up (``given``) that most
    winners used, the longer one on a tie (``points``: anything with a ``warmup``, Tuned or configs)."""
    shares = [p.warmup / given for p in points]
    return max(set(shares), key=lambda share: (shares.count(share), share))


def fitted_share(points: list[Tuned]) -> float:
    """The budget rule's FLOOR_SHARE: the mean over the winners with a floor of floor / largest floor
    (at their own warm-up), to 3 decimals."""
    return round(statistics.fmean(p.floor / p.largest for p in points if p.floor > 0), 3)


def min_floor_range(points: list[Tuned]) -> tuple[float, float]:
    """The MIN_FLOOR values that reproduce which winners have a floor, (low, high]: at the rule's
    warm-up the largest floor of every winner without one must stay below MIN_FLOOR, that of every
    winner with one must reach it."""
    low = max([p.at_rule_warmup for p in points if p.floor == 0], default=0.0)
    high = min([p.at_rule_warmup for p in points if p.floor > 0], default=1.0)
    return low, high


def fitted_min_floor(points: list[Tuned]) -> Optional[float]:
    """The budget rule's MIN_FLOOR: the middle of ``min_floor_range``, to 3 decimals; None where the
    range is empty (no one threshold reproduces the winners: the rule's form must change)."""
    low, high = min_floor_range(points)
    return round((low + high) / 2, 3) if low < high else None


def fitted_random_share(points: list[Tuned]) -> Optional[float]:
    """The budget rule's RANDOM_SHARE: the mean over the winners without a floor of their drops' random
    share (0 for DaP's drops), to 2 decimals; None where every winner has a floor."""
    shares = [p.epsilon for p in points if p.floor == 0]
    return round(statistics.fmean(shares), 2) if shares else None


def fitted_constants(base: TrainConfig, points: list[Tuned]) -> tuple:
    """(WARMUP_SHARE, MIN_FLOOR, FLOOR_SHARE, RANDOM_SHARE) as the finished tuning runs fit them."""
    return (fitted_warmup_share(points, base.warmup), fitted_min_floor(points), fitted_share(points),
            fitted_random_share(points))


LIBRARY = (WARMUP_SHARE, MIN_FLOOR, FLOOR_SHARE, RANDOM_SHARE)  # the rule droppick ships


def rule_is_final(base: TrainConfig, n: int, out: Path) -> bool:
    """Whether droppick's rule constants (``LIBRARY``) are the fit of the finished tuning runs: only
    then do the budget rule's own runs train (they would measure a rule about to change)."""
    points = tuned_floors(base, n, out)
    return points is not None and fitted_constants(base, points) == LIBRARY


def regime_jobs(base: TrainConfig, seeds: list[int], n: int, here: Path, out: Path) -> list[tuple[dict, Path]]:
    """The regimes' runs: the budget rule's only once it is final (its folder on 2,000 per class is the
    budget row's, so the rule is told by name, not by folder)."""
    final = rule_is_final(base, n, out)
    return budget_regimes.jobs(base, seeds, here, out, [r for r in budget_regimes.RULES if final or r != "budget"])


def jobs(parts: list[str]) -> _jobs.Jobs:
    from fashion_mnist_frontier import BASE, HERE, N, OUT, SEEDS

    out = OUT / "budgets"
    found: _jobs.Jobs = []
    if "tune" in parts:
        found += [(tuning_configs(c, N), out / "tuning" / c.folder) for c in tuning_candidates(BASE, N)]
        found += [(configs, out / "tuning" / c.folder) for c, configs in close_call(BASE, N, out)]
    if "rows" in parts:
        found += [(configs, out / c.folder) for c, configs in rows(BASE, SEEDS, N, out)]
    if "all-data" in parts:
        found += [(configs, out / "all-60000" / c.folder) for c, configs in all_data_rows(BASE, N, out)]
    if "regimes" in parts:
        found += regime_jobs(BASE, SEEDS, N, HERE, out)
    return found


def main() -> None:
    args = _jobs.arguments(__doc__, ["tune", "rows", "all-data", "regimes"],
                           "train this part (repeatable): the budget rule's own runs train once WARMUP_SHARE, "
                           "MIN_FLOOR and FLOOR_SHARE are the fit of the finished tuning runs, a winner once its budget's tuning "
                           "runs are done")
    if not args.report:
        _jobs.train(jobs(args.part), *args.share)
    from budgets_report import write_page
    from fashion_mnist_frontier import BASE, HERE, N, OUT, SEEDS, rows_of

    log(f"page written to {write_page(BASE, N, SEEDS, HERE, OUT / 'budgets', rows_of)}")


if __name__ == "__main__":
    main()
