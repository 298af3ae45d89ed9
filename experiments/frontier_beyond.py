"""The frontier's rows beyond the paper: rs2, epsilon, ema and DaP with a floor on the subset, at the
compute of DaP's keep 0.8 and 0.9 (44.6% and 62.7% on the 20,000-image slice).

Each row is its own folder of ordinary run directories (``frontier/beyond/``), so it is trained by
``fashion_mnist_frontier.py --part beyond`` and reported as soon as its seeds are all there,
without holding up the rest of the page. rs2 takes DaP's planned compute itself; epsilon and ema
follow DaP's schedule, so their compute is DaP's; a floor row keeps ``min_keep = f`` and lowers p
to the value ``droppick plan --target-compute X --solve keep --min-keep f`` gives for DaP's
compute X. The floors differ per budget because at 62.7% DaP's subset never falls below 23% of
the data, so a floor under that changes nothing.

Hyper-parameters: the policies' documented defaults (epsilon 0.1, beta 0.8) and the floors
below, not tuned on anything yet; the page says so beside the table.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from _report import noise_word, standard_error
from droppick.budget import solve
from droppick.report.compare import run_configs
from droppick.train.config import TrainConfig

POLICIES = ("rs2", "epsilon", "ema")
FLOORS = {0.8: (0.15, 0.25), 0.9: (0.4, 0.5)}  # min_keep candidates per DaP keep (module docstring)


class Row(NamedTuple):
    keep: float  # the DaP keep whose compute this row matches
    label: str  # the rule, as the page names it
    setting: str  # its hyper-parameters
    configs: dict[str, TrainConfig]  # one per seed, named like ``dap-seed0``
    folder: Path


def rows(base: TrainConfig, seeds: list[int], n: int, out: Path) -> list[Row]:
    """Every row beyond the paper, in page order: per keep, the three policies, then the floors."""
    out_rows = []
    for keep, floors in FLOORS.items():
        at_keep = TrainConfig.from_dict(base.to_dict() | {"keep": keep})
        defaults = {"rs2": "target = DaP's compute", "epsilon": f"eps {at_keep.epsilon}",
                    "ema": f"beta {at_keep.ema_beta}"}
        for policy in POLICIES:
            out_rows.append(Row(keep, policy, defaults[policy], run_configs(at_keep, [policy], seeds, n),
                                out / f"keep-{keep}"))
        target = at_keep.schedule.plan(n).compute_fraction
        for floor in floors:
            solved, _ = solve(dataclasses.replace(at_keep.schedule, min_keep=floor), n, target, "keep")
            cfg = TrainConfig.from_dict(at_keep.to_dict() | {"keep": solved.keep, "min_keep": floor})
            out_rows.append(Row(keep, "dap + floor", f"min_keep {floor}, p {solved.keep}",
                                run_configs(cfg, ["dap"], seeds, n), out / f"keep-{keep}-floor-{floor}"))
    return out_rows


def section(beyond_rows: list[Row], frontier: dict, full: dict,
            rows_of: Callable[[dict, Path], Optional[dict]]) -> list[str]:
    """The page's table of the finished rows beyond the paper and the sentences computed from it;
    ``frontier`` holds the paper's rows per keep, ``rows_of`` aggregates a row's runs (None while
    any is unfinished)."""
    lines = ["## Beyond the paper: rs2 and the candidate rules", "",
             "The same setting and seeds; hyper-parameters are the policies' defaults and the floors named here, "
             "not tuned on a validation split yet (experiments/frontier_beyond.py). vs DaP and vs rs2: the "
             "difference of the seed means and whether it exceeds two standard errors."]
    finished: dict[float, list[tuple[Row, dict]]] = {}
    missing = []
    for row in beyond_rows:
        aggregated = rows_of(row.configs, row.folder)
        if aggregated is None:
            missing.append(f"{row.label} ({row.setting}) at keep {row.keep}")
        else:
            finished.setdefault(row.keep, []).append((row, next(iter(aggregated.values()))))
    if finished:
        lines += ["", "| DaP keep | rule | setting | seeds | compute (measured) | final top-1 (%) | vs full | vs DaP | "
                  "vs rs2 |", "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for keep, done in finished.items():
        dap = frontier[keep]["dap"]
        rs2 = next((r for row, r in done if row.label == "rs2"), None)
        for row, r in done:
            cells = " | ".join(compared(r, other) for other in (full, dap, rs2))
            lines.append(f"| {keep} | {row.label} | {row.setting} | {r['seeds']} | {100 * r['compute_fraction']:.1f}% | "
                         f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {cells} |")
    lines += [""] * bool(finished) + [winner(keep, done, frontier[keep]["dap"], full) for keep, done in finished.items()]
    if missing:
        lines += ["", f"Not trained yet (`fashion_mnist_frontier.py --part beyond`): {'; '.join(missing)}."]
    return lines


def compared(row: dict, other: Optional[dict]) -> str:
    if other is None or other is row:
        return ""
    d = row["top1_mean"] - other["top1_mean"]
    return f"{d:+.2f} ({noise_word(d, standard_error(row, other))})"


def winner(keep: float, done: list[tuple[Row, dict]], dap: dict, full: dict) -> str:
    """Which rule scores best at this budget, DaP and the finished rows beyond it, and whether beyond noise."""
    named = [("dap (the paper)", dap)] + [(f"{row.label} ({row.setting})", r) for row, r in done]
    best_name, best = max(named, key=lambda kv: kv[1]["top1_mean"])
    d_dap, d_full = best["top1_mean"] - dap["top1_mean"], best["top1_mean"] - full["top1_mean"]
    over_dap = "" if best is dap else (f"{d_dap:+.2f} points over DaP ({noise_word(d_dap, standard_error(best, dap))} "
                                       "two standard errors), ")
    return (f"- At DaP keep {keep} ({100 * dap['compute_fraction']:.1f}% compute) the best rule is {best_name}: "
            f"{over_dap}{d_full:+.2f} from full ({noise_word(d_full, standard_error(best, full))} two standard errors).")
