"""The frontier's rows beyond the paper: rs2, epsilon, ema and DaP with a floor on the subset, at the
compute of DaP's keep 0.8 and 0.9 (44.6% and 62.7% on the 20,000-image slice), with their
hyper-parameters chosen on a validation split held out of the training data.

Each (rule, setting) is its own folder of ordinary run directories (``frontier/beyond/``), so it is
trained by ``fashion_mnist_frontier.py --part tune`` (the validation runs) and ``--part beyond``
(the chosen settings, 3 seeds) and reported as soon as its runs are there. rs2 takes DaP's
planned compute itself; epsilon and ema follow DaP's schedule, so their compute is DaP's; a floor
row keeps ``min_keep = f`` and lowers p to the value ``droppick plan --target-compute X --solve keep
--min-keep f`` gives for DaP's compute X. The floors differ per budget: at 62.7% DaP's subset never
falls below 23% of the data, so a floor under that changes nothing, and a floor above about 0.34
(44.6%) or 0.55 (62.7%) spends more than the budget even with the smallest p.

Tuning: one seed (``TUNE_SEED``) per candidate in ``GRID``, trained on 20,000 images of a seeded
30,000-image slice whose other 10,000 are held out as the validation split (``--val-samples``), so
the schedule, N and compute are those of the frontier runs; each rule's setting with the best final
validation top-1 is the one trained on the frontier's slice with 3 seeds and reported on the test
set. The script never reads a tuning run's test accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from _report import noise_word, standard_error
from droppick.budget import solve
from droppick.report.compare import run_configs
from droppick.train.config import TrainConfig

TUNE_VAL = 10_000  # images held out as the validation split; the tuning slice is N + TUNE_VAL images
TUNE_SEED = 0
TUNED = ("epsilon", "ema", "floor")  # the rules with a hyper-parameter; rs2 matches DaP's compute and has none
# Candidates per DaP keep (the budget). The values the first, untuned runs used (epsilon 0.1, beta 0.8,
# floors 0.15/0.25 and 0.4/0.5) are among them; the largest floors are the largest the budget allows.
GRID: dict[float, dict[str, tuple[float, ...]]] = {
    0.8: {"epsilon": (0.1, 0.25, 0.5), "ema": (0.5, 0.8, 0.95), "floor": (0.15, 0.25, 0.3)},
    0.9: {"epsilon": (0.1, 0.25, 0.5), "ema": (0.5, 0.8, 0.95), "floor": (0.4, 0.5, 0.53)},
}
ALL_DATA = 60_000  # every Fashion-MNIST training image
ALL_SEEDS = [0, 1]
LABELS = {"rs2": "rs2", "epsilon": "epsilon", "ema": "ema", "floor": "dap + floor", "dap": "dap"}


class Candidate(NamedTuple):
    keep: float  # the DaP keep whose compute it matches
    rule: str  # a key of LABELS
    value: Optional[float]  # its hyper-parameter (None: rs2, dap)
    setting: str  # the hyper-parameters, as the page names them
    config: TrainConfig  # seed and slice still to be set
    folder: str  # its folder's name under beyond/ or beyond/tuning/


class Row(NamedTuple):
    keep: float
    label: str  # the rule, as the page names it
    setting: str  # its hyper-parameters
    configs: Optional[dict[str, TrainConfig]]  # one per seed, named like ``dap-seed0``; None while tuning runs
    folder: Optional[Path]


def candidate(base: TrainConfig, keep: float, rule: str, value: Optional[float], n: int) -> Candidate:
    """One rule at one setting, at the compute of DaP with ``keep`` on ``n`` samples."""
    at_keep = base.to_dict() | {"keep": keep}
    if rule == "floor":
        schedule = TrainConfig.from_dict(at_keep).schedule
        solved, _ = solve(dataclasses.replace(schedule, min_keep=value), n, schedule.plan(n).compute_fraction, "keep")
        cfg = TrainConfig.from_dict(at_keep | {"policy": "dap", "keep": solved.keep, "min_keep": value})
        return Candidate(keep, rule, value, f"min_keep {value}, p {solved.keep}", cfg, f"keep-{keep}-floor-{value}")
    field, shown = {"epsilon": ("epsilon", "eps"), "ema": ("ema_beta", "beta")}.get(rule, (None, None))
    cfg = TrainConfig.from_dict(at_keep | {"policy": rule} | ({field: value} if field else {}))
    if field is None:
        setting = "target = DaP's compute" if rule == "rs2" else "the paper's rule"
        return Candidate(keep, rule, None, setting, cfg, f"keep-{keep}")
    return Candidate(keep, rule, value, f"{shown} {value}", cfg, f"keep-{keep}-{rule}-{value}")


def tuning_candidates(base: TrainConfig, n: int) -> list[Candidate]:
    """Every validation run: the grid, and DaP itself at each budget for reference. Each trains
    ``n`` images of an ``n + TUNE_VAL`` slice, the rest held out."""
    tune = TrainConfig.from_dict(base.to_dict() | {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL,
                                                   "seed": TUNE_SEED})
    out = []
    for keep, grid in GRID.items():
        out.append(candidate(tune, keep, "dap", None, n))
        out += [candidate(tune, keep, rule, value, n) for rule in TUNED for value in grid[rule]]
    return out


def tuning_configs(c: Candidate, n: int) -> dict[str, TrainConfig]:
    return run_configs(c.config, [c.config.policy], [TUNE_SEED], n)


def val_top1(c: Candidate, tuning: Path, n: int) -> Optional[float]:
    """The final validation top-1 of a tuning run, None while it is unfinished."""
    (name,) = tuning_configs(c, n)
    path = tuning / c.folder / "runs" / name / "summary.json"
    return json.loads(path.read_text())["final_val_top1"] if path.exists() else None


def chosen(candidates: list[Candidate], keep: float, rule: str, tuning: Path, n: int) -> Optional[Candidate]:
    """The rule's candidate with the best validation top-1 at this budget (the first in the grid on a
    tie), None until all of them are trained."""
    scored = [(val_top1(c, tuning, n), c) for c in candidates if c.keep == keep and c.rule == rule]
    if any(score is None for score, _ in scored):
        return None
    return max(scored, key=lambda sc: sc[0])[1]  # max keeps the first of equal scores


def rows(base: TrainConfig, seeds: list[int], n: int, out: Path) -> list[Row]:
    """Every row beyond the paper, in page order: per keep, rs2, then the tuned rules at their chosen
    settings (a row without configs while its tuning runs are unfinished)."""
    tuning = tuning_candidates(base, n)
    out_rows = []
    for keep in GRID:
        rs2 = candidate(base, keep, "rs2", None, n)
        out_rows.append(Row(keep, "rs2", rs2.setting, run_configs(rs2.config, ["rs2"], seeds, n), out / rs2.folder))
        for rule in TUNED:
            pick = chosen(tuning, keep, rule, out / "tuning", n)
            if pick is None:
                out_rows.append(Row(keep, LABELS[rule], "not tuned yet", None, None))
                continue
            final = candidate(base, keep, rule, pick.value, n)
            out_rows.append(Row(keep, LABELS[rule], final.setting + ", tuned",
                                run_configs(final.config, [final.config.policy], seeds, n), out / final.folder))
    return out_rows


def best_rule(base: TrainConfig, n: int, tuning: Path, keep: float = 0.8) -> Optional[Candidate]:
    """The rule beyond the paper that the validation split ranks first at this budget (its best
    setting), None until every tuning run at the budget is trained: the rule that goes on to all
    the data is chosen on validation too, not on the frontier's test accuracy."""
    candidates = tuning_candidates(base, n)
    picks = [chosen(candidates, keep, rule, tuning, n) for rule in TUNED]
    if None in picks:
        return None
    return max(picks, key=lambda c: val_top1(c, tuning, n))


def all_data_rows(base: TrainConfig, n: int, out: Path) -> list[Row]:
    """DaP, rs2 and the best rule at keep 0.8 (44.6% compute) on all 60,000 images, 2 seeds each
    (the best rule's row has no configs while the tuning runs are unfinished). A floor keeps its
    f and re-solves p for the larger N."""
    everything = TrainConfig.from_dict(base.to_dict() | {"train_samples": None})
    best = best_rule(base, n, out / "tuning")
    out_rows = []
    for rule, value in [("dap", None), ("rs2", None), (best.rule, best.value) if best else ("best", None)]:
        if rule == "best":
            out_rows.append(Row(0.8, "the best rule on validation", "not tuned yet", None, None))
            continue
        c = candidate(everything, 0.8, rule, value, ALL_DATA)
        setting = c.setting + (", tuned" if rule in TUNED else "")
        out_rows.append(Row(0.8, LABELS[rule], setting, run_configs(c.config, [c.config.policy], ALL_SEEDS, ALL_DATA),
                            out / "all-60000" / c.folder))
    return out_rows


def all_data_section(all_rows: list[Row], full: Optional[dict],
                     rows_of: Callable[[dict, Path], Optional[dict]]) -> list[str]:
    """The page's table of the all-data rows, and which of them scores best; ``full`` is the
    redundancy curve's full run on all 6,000 images per class (None while unfinished)."""
    lines = ["### All 60,000 images", "",
             f"DaP at keep 0.8, rs2 at its compute, and the rule beyond the paper that ranked first on the validation "
             f"split at that budget (tuning table below), on every training image, seeds {ALL_SEEDS}; otherwise the "
             "frontier's setting. vs full: the redundancy curve's full runs on all images."]
    done = [(row, next(iter(r.values()))) for row in all_rows if row.configs is not None
            for r in [rows_of(row.configs, row.folder)] if r is not None]
    missing = [f"{row.label} ({row.setting})" for row in all_rows if row not in [d[0] for d in done]]
    if done:
        dap = next((r for row, r in done if row.label == "dap"), None)
        rs2 = next((r for row, r in done if row.label == "rs2"), None)
        lines += ["", "| rule | setting | seeds | compute (measured) | final top-1 (%) | vs full | vs DaP | vs rs2 |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row, r in done:
            cells = " | ".join(compared(r, other) for other in (full, dap, rs2))
            lines.append(f"| {row.label} | {row.setting} | {r['seeds']} | {100 * r['compute_fraction']:.1f}% | "
                         f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {cells} |")
        if not missing:
            (best_row, best), *rest = sorted(done, key=lambda d: -d[1]["top1_mean"])
            gaps = [f"{best['top1_mean'] - r['top1_mean']:+.2f} over {row.label} "
                    f"({noise_word(best['top1_mean'] - r['top1_mean'], standard_error(best, r))} two standard errors)"
                    for row, r in rest]
            lines += ["", f"- On all 60,000 images at 44.6% compute the best is {best_row.label} ({best_row.setting}): "
                          f"{', '.join(gaps)}."]
    if missing:
        lines += ["", f"Not trained yet (`fashion_mnist_frontier.py --part all-data`): {'; '.join(missing)}."]
    return lines


def tuning_section(base: TrainConfig, n: int, tuning: Path, seed_std: dict[float, float]) -> list[str]:
    """The page's table of every validation run, the losers too, with the chosen settings marked and
    each one's difference from DaP's validation run. One seed per candidate gives no spread of its
    own, so the verdict borrows DaP's seed std at that budget on the frontier (``seed_std``): two
    single runs differ by noise of std x sqrt(2)."""
    candidates = tuning_candidates(base, n)
    dap = {c.keep: val_top1(c, tuning, n) for c in candidates if c.rule == "dap"}
    lines = ["### Tuning on a validation split", "",
             f"Seed {TUNE_SEED}, one run per candidate: {n:,} training images of a seeded {n + TUNE_VAL:,}-image "
             f"slice, the other {TUNE_VAL:,} (class-stratified) held out as the validation split, the same schedule "
             "and compute as the frontier's runs. Each rule's setting with the best final validation top-1 is "
             "chosen (bold) and trained on the frontier's slice above; the tuning runs' test accuracy is not read. "
             "The grid was fixed after the first untuned seed-0 runs (epsilon 0.1, beta 0.8, floors 0.15 and 0.25 "
             "at keep 0.8, rs2) had been evaluated on the test set; the choice within it is made on validation only. "
             "vs DaP: the difference from DaP's validation run at the same budget, within or beyond two standard "
             "errors of a difference of two single runs, std x sqrt(2) with DaP's seed std on the frontier "
             f"({', '.join(f'{std:.2f} at keep {keep}' for keep, std in seed_std.items())}): one seed cannot tell "
             "settings apart by less than that.",
             "", "| DaP keep | rule | setting | final val top-1 (%) | vs DaP |", "| ---: | --- | --- | ---: | ---: |"]
    for c in candidates:
        score = val_top1(c, tuning, n)
        pick = c.rule in TUNED and chosen(candidates, c.keep, c.rule, tuning, n) == c
        cell = "not trained yet" if score is None else f"**{score:.2f}**" if pick else f"{score:.2f}"
        d = None if score is None or dap[c.keep] is None or c.rule == "dap" else score - dap[c.keep]
        vs = "" if d is None else f"{d:+.2f} ({noise_word(d, seed_std[c.keep] * math.sqrt(2))})"
        lines.append(f"| {c.keep} | {LABELS[c.rule]} | {c.setting} | {cell} | {vs} |")
    return lines


def section(beyond_rows: list[Row], frontier: dict, full: dict,
            rows_of: Callable[[dict, Path], Optional[dict]]) -> list[str]:
    """The page's table of the finished rows beyond the paper and the sentences computed from it;
    ``frontier`` holds the paper's rows per keep, ``rows_of`` aggregates a row's runs (None while
    any is unfinished)."""
    lines = ["## Beyond the paper: rs2 and the candidate rules", "",
             "The same setting and seeds; each rule's hyper-parameter chosen on a validation split (below, "
             "experiments/frontier_beyond.py). vs DaP and vs rs2: the difference of the seed means and whether it "
             "exceeds two standard errors."]
    finished: dict[float, list[tuple[Row, dict]]] = {}
    missing = []
    for row in beyond_rows:
        aggregated = None if row.configs is None else rows_of(row.configs, row.folder)
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
    lines += [target for keep, done in finished.items() if (target := verdict(keep, done, frontier[keep], full))]
    if missing:
        lines += ["", f"Not trained yet (`fashion_mnist_frontier.py --part tune`, then `--part beyond`): "
                      f"{'; '.join(missing)}."]
    return lines


def compared(row: dict, other: Optional[dict]) -> str:
    if other is None or other is row:
        return ""
    d = row["top1_mean"] - other["top1_mean"]
    return f"{d:+.2f} ({noise_word(d, standard_error(row, other))})"


def verdict(keep: float, done: list[tuple[Row, dict]], paper: dict, full: dict) -> Optional[str]:
    """Issue 23's target at this budget, met or not. 62.7% (keep 0.9): some built-in rule within two
    standard errors of full, or above it. 44.6% (keep 0.8): a rule beyond the paper at least 1.0
    point over DaP and beyond two standard errors of both DaP and rs2. None at another budget."""
    if keep == 0.9:
        named = [(policy, r) for policy, r in paper.items()] + [(f"{row.label} ({row.setting})", r) for row, r in done]
        close = [name for name, r in named if r["top1_mean"] >= full["top1_mean"]
                 or noise_word(r["top1_mean"] - full["top1_mean"], standard_error(r, full)) == "within"]
        return ("- Target at 62.7% (a built-in rule within two standard errors of full, or above it): "
                + (f"met by {', '.join(close)}." if close else "not met by any rule trained here."))
    if keep != 0.8:
        return None
    dap = paper["dap"]
    rs2 = next((r for row, r in done if row.label == "rs2"), None)
    if rs2 is None:
        return None

    def clears(r: dict) -> bool:
        lead = r["top1_mean"] - dap["top1_mean"]
        return (lead >= 1.0 and noise_word(lead, standard_error(r, dap)) == "beyond"
                and noise_word(r["top1_mean"] - rs2["top1_mean"], standard_error(r, rs2)) == "beyond"
                and r["top1_mean"] > rs2["top1_mean"])

    met = [f"{row.label} ({row.setting})" for row, r in done if row.label != "rs2" and clears(r)]
    return ("- Target at 44.6% (a rule beyond the paper at least 1.0 point over DaP, beyond two standard errors of "
            "both DaP and rs2): " + (f"met by {', '.join(met)}." if met else "not met by any rule trained here."))


def winner(keep: float, done: list[tuple[Row, dict]], dap: dict, full: dict) -> str:
    """Which rule scores best at this budget, DaP and the finished rows beyond it, and whether beyond noise."""
    named = [("dap (the paper)", dap)] + [(f"{row.label} ({row.setting})", r) for row, r in done]
    best_name, best = max(named, key=lambda kv: kv[1]["top1_mean"])
    d_dap, d_full = best["top1_mean"] - dap["top1_mean"], best["top1_mean"] - full["top1_mean"]
    over_dap = "" if best is dap else (f"{d_dap:+.2f} points over DaP ({noise_word(d_dap, standard_error(best, dap))} "
                                       "two standard errors), ")
    return (f"- At DaP keep {keep} ({100 * dap['compute_fraction']:.1f}% compute) the best rule is {best_name}: "
            f"{over_dap}{d_full:+.2f} from full ({noise_word(d_full, standard_error(best, full))} two standard errors).")


def budget_table(frontier: dict, full: dict, beyond_rows: list[Row],
                 rows_of: Callable[[dict, Path], Optional[dict]]) -> list[str]:
    """The README's "which policy for which budget" table: at each budget of the frontier, the rule
    with the best mean test top-1 among the paper's policies and the finished rows beyond it, beside
    DaP, rs2 and full, and whether its lead over DaP exceeds two standard errors."""
    lines = ["| compute | best rule (its setting) | its top-1 (%) | DaP, the paper's rule | rs2 | full | best vs DaP |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    top1 = lambda r: f"{r['top1_mean']:.2f} ± {r['top1_std']:.2f}"  # noqa: E731
    for keep, paper in frontier.items():
        named = [(policy, f"keep {keep}" if policy == "dap" else f"at DaP keep {keep}'s compute", r)
                 for policy, r in paper.items()]
        for row in beyond_rows:
            aggregated = None if row.keep != keep or row.configs is None else rows_of(row.configs, row.folder)
            if aggregated is not None:
                named.append((row.label, row.setting, next(iter(aggregated.values()))))
        label, setting, best = max(named, key=lambda n: n[2]["top1_mean"])
        dap = paper["dap"]
        rs2 = next((r for name, _, r in named if name == "rs2"), None)
        lead = best["top1_mean"] - dap["top1_mean"]
        verdict = "it is DaP" if best is dap else f"{lead:+.2f} ({noise_word(lead, standard_error(best, dap))} noise)"
        lines.append(f"| {100 * dap['compute_fraction']:.1f}% | {label} ({setting}) | {top1(best)} | {top1(dap)} | "
                     f"{top1(rs2) if rs2 else 'not run'} | {top1(full)} | {verdict} |")
    return lines
