"""The budget rule on data less kind than 60,000 clean balanced images (issue 31): at DaP keep 0.8's
compute (44.6% on the frontier's schedule), full, the paper's DaP, rs2 and the budget rule
(``--target-compute``), 3 seeds each, on scarce data (600 and 2,000 images per class, the redundancy
curve's slices) and on a seeded long tail of the frontier's 20,000-image slice (10x between the
largest and the smallest class). Trained by ``frontier_budgets.py --part regimes``, reported on its page.

Runs the frontier already has are reused where their settings are these (full and DaP p = 0.9's
folders keep p = 0.9 in their config, which full ignores): full on 600 and 2,000 per class, DaP and
rs2 at keep 0.8 on 2,000 per class, and there the budget rule's row at 44.6% of frontier_budgets.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from droppick.report.compare import dataset_size, run_configs
from droppick.train.config import TrainConfig

KEEP = 0.8  # the budget: DaP keep 0.8's planned compute on each regime's N
RULES = ("full", "dap", "rs2", "budget")
IMBALANCE = 10.0


class Regime(NamedTuple):
    name: str  # as the page names it
    slug: str  # its folder under budgets/regimes/
    changes: dict  # config keys that differ from the frontier's BASE


REGIMES = [Regime("600 images per class", "600", {"train_samples": None, "per_class": 600}),
           Regime("2,000 images per class", "2000", {}),
           Regime(f"long tail of the 20,000-image slice ({IMBALANCE:g}x)", "long-tail", {"imbalance": IMBALANCE})]


def regime_base(base: TrainConfig, regime: Regime) -> TrainConfig:
    return TrainConfig.from_dict(base.to_dict() | regime.changes | {"keep": KEEP})


def rule_configs(base: TrainConfig, regime: Regime, rule: str, seeds: list[int]) -> dict[str, TrainConfig]:
    """The rule's configs on the regime, one per seed; ``budget`` is what ``--target-compute`` writes
    for DaP's compute on the regime's N (the budget rule's keep and floor)."""
    cfg = regime_base(base, regime)
    n = dataset_size(cfg)
    if rule == "full":  # the frontier's full runs were made with p = 0.9, which full ignores: reuse them
        cfg = TrainConfig.from_dict(cfg.to_dict() | {"keep": 0.9})
    if rule == "budget":
        compute = cfg.schedule.plan(n).compute_fraction
        cfg = cfg.with_budget(compute, n)
    return run_configs(cfg, [cfg.policy if rule == "budget" else rule], seeds, n)


def folder(regime: Regime, rule: str, here: Path, out: Path) -> Path:
    """Where the rule's runs on the regime live: the frontier's folders where it has them."""
    reused = {("600", "full"): here / "redundancy", ("2000", "full"): here / "table2f",
              ("2000", "dap"): here / "frontier" / "keep-0.8", ("2000", "rs2"): here / "frontier" / "beyond" / "keep-0.8",
              ("2000", "budget"): out / "c0.4464-budget"}  # the budget rule's row at 44.6% (frontier_budgets.rows)
    return reused.get((regime.slug, rule), out / "regimes" / regime.slug / rule)


def jobs(base: TrainConfig, seeds: list[int], here: Path, out: Path, rules=RULES) -> list[tuple[dict, Path]]:
    return [(rule_configs(base, regime, rule, seeds), folder(regime, rule, here, out))
            for regime in REGIMES for rule in rules]
