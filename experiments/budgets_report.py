"""The page of the budget rule's evidence, experiments/fashion-mnist/frontier/budgets/README.md, and the
README's budget table, from the runs of frontier_budgets.py and budget_regimes.py (and the frontier's
own rows at 44.6% and 62.7%). Every section says what is not trained yet instead of waiting for it."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Callable, Optional

import budget_regimes
import frontier_budgets as fb
from budgets_plots import FRONTIER, plot_curves, plot_fit, plot_mix
from _report import machine, noise_word, setting, standard_error, training_commits, utc_now
from droppick.budget import RANDOM_SHARE, budget_rule
from droppick.schedule import FLOOR_SHARE, MIN_FLOOR, WARMUP_SHARE
from droppick.train.rundir import code_version
from fashion_mnist_frontier import BASE

Rows = Callable[[dict, Path], Optional[dict]]  # fashion_mnist_frontier.rows_of: aggregated rows, None if unfinished


def one(rows_of: Rows, configs: dict, folder: Path) -> Optional[dict]:
    """The aggregated row of one rule's seeds, None while any is unfinished."""
    rows = rows_of(configs, folder)
    return None if rows is None else next(iter(rows.values()))


def top1(r: Optional[dict], key: str = "top1") -> str:
    return "not trained yet" if r is None else f"{r[key + '_mean']:.2f} ± {r[key + '_std']:.2f}"


def versus(r: Optional[dict], other: Optional[dict]) -> str:
    if r is None or other is None or r is other:
        return ""
    d = r["top1_mean"] - other["top1_mean"]
    return f"{d:+.2f} ({noise_word(d, standard_error(r, other))})"


def fit_section(base, points: Optional[list], n: int, out: Path) -> list[str]:
    lines = ["## The budget rule", "",
             "`--target-compute C` (and `droppick.budget_rule`; `DaPSchedule.for_budget` is its schedule) makes four "
             "choices, p solved so the plan spends C. Its warm-up is WARMUP_SHARE x the one given (here the "
             "frontier's W = 4), rounded down, and shorter where C needs it. The largest floor C allows with that "
             "warm-up (the floor whose drops fall straight to it and still spend C) decides the floor: none where it "
             "is under MIN_FLOOR, else f = FLOOR_SHARE x that largest floor. Its drops: DaP's (the hardest) where it "
             "has a floor; epsilon-greedy where it has none, RANDOM_SHARE of each drop's keep drawn at random. The "
             "fit: WARMUP_SHARE is the share of W = 4 that most validation winners used; MIN_FLOOR is the middle of "
             "the thresholds that separate the winners without a floor from those with one (at the rule's warm-up, "
             "the largest of the first and the smallest of the second); FLOOR_SHARE is the mean, over the winners "
             "with a floor, of their floor over their largest floor; RANDOM_SHARE is the mean random share of the "
             "winners without a floor (0 for DaP's drops).", ""]
    if points is None:
        return lines + ["Not fitted yet: tuning runs are still missing (below).", ""]
    fitted = fb.fitted_constants(base, points)
    rule_w = int(fitted[0] * base.warmup)
    lines += [f"| budget | validation winner | W | its floor f | largest floor | f / largest | its random share "
              f"| largest floor with W = {rule_w} | the rule chooses |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in points:
        lines.append(f"| {100 * p.budget:.1f}% | {p.setting} | {p.warmup} | {p.floor} | {p.largest} | "
                     f"{f'{p.floor / p.largest:.3f}' if p.floor else ''} | {p.epsilon if not p.floor else ''} | "
                     f"{p.at_rule_warmup} | {chosen(p.budget, n)} |")
    low, high = fb.min_floor_range(points)
    lines += ["", f"Fitted: WARMUP_SHARE {fitted[0]}, MIN_FLOOR in ({low}, {high}]: "
              + (f"{fitted[1]}" if fitted[1] is not None else "none (the range is empty: no one threshold "
                 "separates the winners, and the rule's form must change)")
              + f", FLOOR_SHARE {fitted[2]}, RANDOM_SHARE {fitted[3]}. droppick has WARMUP_SHARE = {WARMUP_SHARE}, "
              + f"MIN_FLOOR = {MIN_FLOOR}, FLOOR_SHARE = {FLOOR_SHARE} (droppick.schedule), RANDOM_SHARE = "
              + f"{RANDOM_SHARE} (droppick.budget) "
              + ("(the same: the rule below is the fit)." if fitted == fb.LIBRARY else
                 "(NOT the fit: set them to the fitted values, then train the budget rule's runs)."),
              "Where the rule's choice differs from a budget's winner (another warm-up, or a floor off by more than "
              "0.01), the tuning table below has the candidate nearest the rule's choice and its score.", "",
              f"What the rule chooses on the frontier's schedule (W = {BASE.warmup} given, I = {BASE.interval}, "
              f"R = {{{', '.join(map(str, BASE.reuse_at))}}}, {BASE.epochs} epochs):", "",
              "| budget | N = 20,000 | N = 60,000 |", "| ---: | --- | --- |"]
    for c in [0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9]:
        lines.append(f"| {100 * c:.0f}% | {chosen(c, n)} | {chosen(c, fb.ALL_DATA)} |")
    plot_fit(points, n, out / "rule.png")
    return lines + ["", "![the budget rule](rule.png)", ""]


def chosen(budget: float, n: int) -> str:
    """What the rule chooses at ``budget`` on the frontier's schedule for ``n`` samples, as the page names it."""
    rule = budget_rule(budget, n, *FRONTIER)
    s, eps = rule.schedule, f", eps {rule.epsilon}" if rule.policy == "epsilon" else ""
    return f"W {s.warmup}, min_keep {s.min_keep}{eps}, p {s.keep}"


def tuning_section(base, n: int, out: Path, dap_std: dict) -> list[str]:
    candidates = fb.tuning_candidates(base, n)
    dap = {c.budget: fb.val_top1(c, out / "tuning", n) for c in candidates if (c.rule, c.changes) == ("dap", {})}
    for keep in fb.SHORT_WARMUP:  # there DaP's validation run is frontier_beyond's
        theirs = fb.frontier_beyond.candidate(candidates[0].config, keep, "dap", None, n)
        dap[fb.paper_budget(base, keep, n)] = fb.val_top1(theirs, out.parent / "beyond" / "tuning", n)
    lines = ["## Tuning on the validation split", "",
             f"Seed {fb.TUNE_SEED}, one run per candidate: {n:,} training images of a seeded {n + fb.TUNE_VAL:,}-image "
             f"slice, the other {fb.TUNE_VAL:,} (class-stratified) held out for validation; the best final validation "
             "top-1 at each budget wins (bold). Test accuracy of these runs is never read. vs DaP: the difference from "
             "DaP's validation run at the budget, within or beyond two standard errors of the difference of two single "
             "runs (DaP's seed std at that budget x sqrt(2); the frontier's keep 0.8 std until this budget's DaP rows "
             "are trained).", "",
             "| budget | rule | setting | final val top-1 (%) | vs DaP |", "| ---: | --- | --- | ---: | ---: |"]
    for c in candidates:
        score = fb.val_top1(c, out / "tuning", n)
        best = c.budget in fb.GRID and fb.winner(candidates, c.budget, out / "tuning", n) == c  # else: the fit's table
        cell = "not trained yet" if score is None else f"**{score:.2f}**" if best else f"{score:.2f}"
        d = None if score is None or dap[c.budget] is None or (c.rule, c.changes) == ("dap", {}) else score - dap[c.budget]
        vs = "" if d is None else f"{d:+.2f} ({noise_word(d, dap_std[c.budget] * 2 ** 0.5)})"
        lines.append(f"| {100 * c.budget:.0f}% | {c.rule} | {c.setting} | {cell} | {vs} |")
    lines += ["", "rs2 is a reference, not a candidate (the rule is chosen among its forms: dap, floor and epsilon):",
              ""]
    for c in candidates:
        best = c.rule in fb.REFERENCES and fb.winner(candidates, c.budget, out / "tuning", n)
        scores = [fb.val_top1(x, out / "tuning", n) for x in (c, best)] if best else [None]
        if None not in scores:
            d = scores[1] - scores[0]
            lines.append(f"- at {100 * c.budget:.0f}% the winner {d:+.2f} against {c.rule} ({c.setting}) on validation "
                         f"({noise_word(d, dap_std[c.budget] * 2 ** 0.5)}){'' if d > 0 else f': {c.rule} scores higher'}.")
    return lines + ["", *close_call_lines(base, n, out)]


def val_row(configs: dict, folder: Path) -> Optional[dict]:
    """The runs' final validation top-1 as a row (``top1_mean``, ``top1_std``, ``seeds``, as
    ``standard_error`` reads it), None while any of them is unfinished."""
    paths = [folder / "runs" / name / "summary.json" for name in configs]
    if not all(p.exists() for p in paths):
        return None
    values = [json.loads(p.read_text())["final_val_top1"] for p in paths]
    return {"top1_mean": statistics.fmean(values), "top1_std": statistics.stdev(values), "seeds": len(values)}


def close_call_lines(base, n: int, out: Path) -> list[str]:
    """The best of DaP's forms and the best epsilon form against rs2 at ``fb.CLOSE_CALL`` over
    ``fb.CLOSE_CALL_SEEDS`` on the validation setting."""
    pairs = fb.close_call(base, n, out)
    rows = [val_row(configs, out / "tuning" / c.folder) for c, configs in pairs]
    head = (f"At {100 * fb.CLOSE_CALL:.0f}%, the best of DaP's forms, rs2 and the best epsilon form with seeds "
            f"{fb.CLOSE_CALL_SEEDS} on the validation setting (each seed draws its own slice and validation split; "
            "one seed each was a close call): ")
    if not pairs or None in rows:
        return [head + "not trained yet.", ""]
    lines = [head, "", "| rule | setting | final val top-1 (%), 3 seeds | vs rs2 |", "| --- | --- | ---: | ---: |"]
    rs2 = rows[1]
    for (c, _), r in zip(pairs, rows):
        d, se = r["top1_mean"] - rs2["top1_mean"], standard_error(r, rs2)
        vs = "" if r is rs2 else f"{d:+.2f} ({noise_word(d, se)}, 2 SE {2 * se:.2f})"
        lines.append(f"| {c.rule} | {c.setting} | {r['top1_mean']:.2f} ± {r['top1_std']:.2f} | {vs} |")
    return lines + [""]


def budget_rows(base, seeds, n: int, here: Path, out: Path, rows_of: Rows) -> dict[float, dict[str, tuple]]:
    """Per budget of the README table, label -> (setting, aggregated row or None): the budget rule,
    DaP, rs2 and (25%, 35%) the validation winner; 44.6% and 62.7% take DaP and rs2 from the frontier."""
    table: dict[float, dict[str, tuple]] = {}
    for c, configs in fb.rows(base, seeds, n, out):
        label = {"budget": "budget rule", "budget-dap": "the rule's schedule, DaP's drops", "dap": "dap",
                 "rs2": "rs2", "former": "an earlier challenger"}.get(c.rule, "validation winner")
        table.setdefault(c.budget, {})[label] = (c.setting, one(rows_of, configs, out / c.folder))
    frontier = {0.8: (here / "frontier" / "keep-0.8", here / "frontier" / "beyond" / "keep-0.8"),
                0.9: (here / "table2f", here / "frontier" / "beyond" / "keep-0.9")}
    for keep, budget in zip(fb.PAPER_KEEPS, fb.rule_budgets(base, n)[len(fb.GRID):]):
        paper = fb.TrainConfig.from_dict(base.to_dict() | {"keep": keep})
        entry = table.setdefault(budget, {})
        entry["dap"] = (f"p {keep}", one(rows_of, fb.run_configs(paper, ["dap"], seeds, n), frontier[keep][0]))
        entry["rs2"] = ("target = C", one(rows_of, fb.run_configs(paper, ["rs2"], seeds, n), frontier[keep][1]))
    return table


def rows_section(table: dict, full: Optional[dict]) -> list[str]:
    lines = ["## The budget rule against DaP and rs2", "",
             "The frontier's 20,000-image slice, 3 seeds (mean ± std). vs: the difference of seed means and whether "
             "it exceeds two standard errors.", "",
             "| budget | rule | setting | seeds | compute (measured) | final top-1 (%) | vs full | vs rs2 | vs DaP |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for budget, entries in sorted(table.items()):
        rs2, dap = entries.get("rs2", (None, None))[1], entries.get("dap", (None, None))[1]
        for label, (settings, r) in entries.items():
            seeds = "" if r is None else r["seeds"]
            compute = "" if r is None else f"{100 * r['compute_fraction']:.1f}%"
            lines.append(f"| {100 * budget:.1f}% | {label} | {settings} | {seeds} | {compute} | {top1(r)} | "
                         f"{versus(r, full)} | {versus(r, rs2)} | {versus(r, dap)} |")
    low = table.get(0.25, {})
    rs2 = low.get("rs2", (None, None))[1]
    done = [(label, r) for label, (_, r) in low.items() if label not in ("rs2", "dap") and r is not None]
    if rs2 is not None and done:
        label, best = max(done, key=lambda lr: lr[1]["top1_mean"])
        lead = best["top1_mean"] - rs2["top1_mean"]
        met = lead >= 1.0 and noise_word(lead, standard_error(best, rs2)) == "beyond"
        lines += ["", f"- Target at 25% (at least +1.0 over rs2, beyond two standard errors): {label} is {lead:+.2f} "
                      f"over rs2 ({noise_word(lead, standard_error(best, rs2))} two standard errors): "
                      + ("met." if met else "not met.")]
    return lines + [""]


def all_data_section(base, n: int, out: Path, full: Optional[dict], rows_of: Rows) -> list[str]:
    lines = ["## All 60,000 images at 35%", ""]
    rows = fb.all_data_rows(base, n, out)
    if not rows:
        return lines + ["Not trained yet: the budget rule trains here once it is fitted.", ""]
    [(c, configs)] = rows
    r = one(rows_of, configs, out / "all-60000" / c.folder)
    seeds, compute = ("", "") if r is None else (r["seeds"], f"{100 * r['compute_fraction']:.1f}%")
    lines += ["| rule | setting | seeds | compute (measured) | final top-1 (%) | vs full (all 60,000, 2 seeds) |",
              "| --- | --- | ---: | ---: | ---: | ---: |",
              f"| budget rule | {c.setting} | {seeds} | {compute} | {top1(r)} | {versus(r, full)} |"]
    if r is not None and full is not None:
        gap = r["top1_mean"] - full["top1_mean"]
        lines += ["", f"- Target (within 0.5 points of full): {gap:+.2f}: " + ("met." if gap >= -0.5 else "not met.")]
    return lines + [""]


def balanced(configs: dict, folder: Path) -> Optional[float]:
    """The seed mean of the runs' final balanced top-1, None where a run predates its recording."""
    values = [json.loads((folder / "runs" / name / "summary.json").read_text()).get("final_test_balanced_top1")
              for name in configs]
    return None if None in values else sum(values) / len(values)


def regimes_section(base, seeds, here: Path, out: Path, rows_of: Rows) -> list[str]:
    lines = ["## Data less kind: scarce and long-tailed", "",
             f"At DaP keep {budget_regimes.KEEP}'s compute on each regime's N: full, the paper's DaP, rs2 and the budget "
             "rule (what `--target-compute` chooses there), 3 seeds. Balanced top-1 is the mean of the per-class top-1; "
             "the Fashion-MNIST test split is balanced (1,000 images per class), where it equals top-1 (marked = for "
             "runs trained before it was recorded).", "",
             "| regime | rule | seeds | compute (measured) | final top-1 (%) | balanced top-1 (%) | vs full | vs rs2 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    verdicts, mixes, curves = [], {}, {}
    for regime in budget_regimes.REGIMES:
        rows = {}
        for rule in budget_regimes.RULES:
            configs = budget_regimes.rule_configs(base, regime, rule, seeds)
            where = budget_regimes.folder(regime, rule, here, out)
            r = one(rows_of, configs, where)
            rows[rule] = r
            bal = None if r is None else balanced(configs, where)
            cells = ("", "", "not trained yet", "") if r is None else (
                r["seeds"], f"{100 * r['compute_fraction']:.1f}%", top1(r), "=" if bal is None else f"{bal:.2f}")
            lines.append(f"| {regime.name} | {rule} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | "
                         f"{versus(r, rows.get('full'))} | {versus(r, rows.get('rs2'))} |")
            if r is not None:
                curves.setdefault(regime.name, {})[rule] = [where / "runs" / name for name in configs]
            if rule in ("budget", "dap") and r is not None:
                mixes.setdefault(rule, {})[regime.name] = where / "runs" / next(iter(configs))
        rule, full, rs2, dap = rows["budget"], rows["full"], rows["rs2"], rows["dap"]
        if None not in (rule, full, rs2, dap):
            gap = rule["top1_mean"] - full["top1_mean"]
            close = gap >= 0 or noise_word(gap, standard_error(rule, full)) == "within"
            lead = rule["top1_mean"] - rs2["top1_mean"]
            verdicts.append(f"- {regime.name}: the budget rule is {lead:+.2f} against rs2 ("
                            + ("at or above it" if lead >= 0 else f"short by {-lead:.2f}") + f") and {gap:+.2f} against "
                            f"full ({'within two standard errors or above' if close else 'short, beyond two standard errors'})"
                            f"; the paper's DaP is {dap['top1_mean'] - full['top1_mean']:+.2f} against full and the "
                            f"rule {versus(rule, dap)} against DaP.")
    lines += [""] + (verdicts or ["No regime has all four rules trained yet."]) + [""]
    if "budget" in mixes:
        plot_mix({rule: mixes[rule] for rule in ("budget", "dap") if rule in mixes}, out / "class_mix.png")
        lines += ["The budget rule's subset (top) and the paper's DaP's (bottom), seed 0: the share of each class's "
                  "images it trains on, epoch by epoch (1.0: all of them). Where the rule has a floor, its drops reach "
                  "it within one or two epochs and then stop, so each cycle trains on one subset to its end; DaP's "
                  "keeps shrinking and re-choosing the hardest. Where DaP scores closer to full than the rule (the "
                  "lines above), our reading, not tested: the rule's one subset holds a small share of several "
                  "classes through the last, low-learning-rate epochs, where DaP's re-chooses every epoch.", "",
                  "![class mix](class_mix.png)", ""]
    if curves:
        plot_curves(curves, out / "regime_curves.png")
        lines += ["Test top-1 during training, the mean over the seeds at each evaluated epoch:", "",
                  "![test top-1 by epoch](regime_curves.png)", ""]
    return lines


def readme_table(table: dict, full: Optional[dict], peers: dict[float, list[str]]) -> list[str]:
    """The README's table: what `--target-compute` chooses at each budget and how it scored, and the best
    peer there (``peers``: peers_report.readme_cells) against droppick's best rule."""
    lines = ["| compute | `--target-compute` chooses (N = 20,000) | its top-1 (%) | DaP, the paper's rule | rs2 | full | "
             "rule vs rs2 | rule vs full | best peer | its top-1 (%) | peer vs droppick's best |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for budget, entries in sorted(table.items()):
        setting, rule = entries.get("budget rule", ("not fitted yet", None))
        dap, rs2 = entries["dap"][1], entries["rs2"][1]
        peer = peers.get(budget, ["not run at this budget", "", ""])
        lines.append(f"| {100 * budget:.1f}% | {setting} | {top1(rule)} | {top1(dap)} | {top1(rs2)} | {top1(full)} | "
                     f"{versus(rule, rs2)} | {versus(rule, full)} | {' | '.join(peer)} |")
    return lines


def readme(base, n: int, seeds: list, here: Path, out: Path, rows_of: Rows) -> list[str]:
    """The README's table from the runs: this page's rows and the peers' (peers_report.py, which writes it too)."""
    from peers_report import readme_cells

    full = one(rows_of, fb.run_configs(base, ["full"], seeds, n), here / "table2f")
    return readme_table(budget_rows(base, seeds, n, here, out, rows_of), full, readme_cells(base, seeds, n, here, rows_of))


def write_page(base, n: int, seeds: list, here: Path, out: Path, rows_of: Rows) -> Path:
    from fashion_mnist_frontier import FOLDERS, frontier_configs, run_configs

    full = one(rows_of, run_configs(base, ["full"], seeds, n), here / "table2f")
    all_full = one(rows_of, fb.run_configs(fb.TrainConfig.from_dict(base.to_dict() | {"train_samples": None}), ["full"],
                                           fb.ALL_SEEDS, fb.ALL_DATA), here / "frontier" / "all-6000")
    dap_44 = one(rows_of, frontier_configs(0.8), here / "frontier" / "keep-0.8")
    table = budget_rows(base, seeds, n, here, out, rows_of)
    dap_std = {b: (table.get(b, {}).get("dap", (None, None))[1] or dap_44)["top1_std"] for b in fb.GRID}
    dap_std |= {fb.paper_budget(base, keep, n): one(rows_of, frontier_configs(keep), FOLDERS[keep])["top1_std"]
                for keep in fb.SHORT_WARMUP}
    points = fb.tuned_floors(base, n, out)
    readme_lines = readme(base, n, seeds, here, out, rows_of)
    lines = ["# The budget rule: evidence at 25% to 63% compute, on scarce and long-tailed data", "",
             f"Generated by `{' '.join([Path(sys.executable).name, *sys.argv])}` (from the repository root) on "
             f"{utc_now()} UTC at commit {code_version()['git_commit']}; machine (where the page was written; the runs "
             f"trained in the background of development sessions): {machine()}. "
             + training_commits(sorted(p.parent for p in out.rglob("summary.json"))), "",
             setting(fb.__doc__), "",
             *fit_section(base, points, n, out), *rows_section(table, full),
             "### What `--target-compute` chooses (the README's table)", "", *readme_lines, "",
             *all_data_section(base, n, out, all_full, rows_of),
             *regimes_section(base, seeds, here, out, rows_of),
             *tuning_section(base, n, out, dap_std)]
    page = out / "README.md"
    page.write_text("\n".join(lines).rstrip("\n") + "\n")
    write_readme_table(readme_lines, base, n, seeds, here)
    return page


README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- budget-rule:start (written by experiments/frontier_budgets.py) -->", "<!-- budget-rule:end -->"


def write_readme_table(table: list[str], base, n: int, seeds: list, here: Path) -> None:
    """The README's block between START and END: the table, the line on noisy labels (noise_report.py,
    from the runs under ``here``) and the command that wrote them."""
    from noise_report import readme_line

    noisy = readme_line(base, n, seeds, here / "noise" / "training")
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{README} has no {START} ... {END} block to write into")
    note = (f"Fashion-MNIST, the small CNN on the frontier's 20,000-image slice, 30 epochs, W = 4, R = {{15}}, 3 seeds "
            f"(mean ± std); vs: whether the difference exceeds two standard errors. Best peer: of Selective Backprop "
            f"(its compute in step-equivalents), SeTa and DaP ranking by EL2N or the margin, each tuned on validation "
            f"([their page](experiments/fashion-mnist/frontier/peers/README.md)), the one with the best test top-1 (one "
            f"that beats droppick's best rule, if any does); peer vs droppick's best: against the best of DaP, DaP + "
            f"floor and the budget rule at that budget, \"the peer wins\" where it is higher beyond two standard "
            f"errors. Written by "
            f"`{' '.join([Path(sys.executable).name, *sys.argv])}` (from the repository root) on {utc_now()} UTC at "
            f"commit {code_version()['git_commit']} from the runs of "
            "[its page](experiments/fashion-mnist/frontier/budgets/README.md), which says where each run trained.")
    head, rest = text.split(START, 1)
    README.write_text(head + START + "\n" + "\n".join([*table, "", noisy, "", note]) + "\n" + END + rest.split(END, 1)[1])
