"""The peers' page, experiments/fashion-mnist/frontier/peers/README.md, from the runs of frontier_peers.py
beside the frontier's own rows at 44.6% and 62.7% compute (full, DaP, rs2, DaP + floor, and the budget
rule where frontier_budgets.py has trained it), and the peers' cells of the README's budget table.
Every section says what is not trained yet instead of waiting for it."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import fashion_mnist_frontier as frontier
import frontier_beyond
import frontier_budgets as fb
import frontier_peers as peers
from _report import machine, noise_word, setting, standard_error, training_commits, utc_now
from budgets_report import Rows, one, readme, top1, versus, write_readme_table
from droppick.policies.selective_backprop import FORWARD_COST
from droppick.report.compare import run_configs
from droppick.train.config import TrainConfig
from droppick.train.rundir import code_version

LABELS = {"selective_backprop": "Selective Backprop", "seta": "SeTa", "score": "DaP ranking by a score"}
OFF_BUDGET = 0.01  # a row whose measured step-equivalents miss the budget by more than this is named


class Entry(NamedTuple):
    label: str  # the rule, as the page names it
    setting: str  # its hyper-parameters
    row: Optional[dict]  # aggregated over its seeds; None while any is unfinished (or it is not tuned yet)
    kind: str  # "full", "droppick" (DaP, DaP + floor, the budget rule), "baseline" (rs2) or "peer"
    runs: list[Path]  # its run directories, once finished


def entry(label: str, settings: str, kind: str, configs: Optional[dict], folder: Optional[Path], rows_of: Rows) -> Entry:
    r = None if configs is None else one(rows_of, configs, folder)
    return Entry(label, settings, r, kind, [] if r is None else [folder / "runs" / name for name in configs])


def budget_of(base: TrainConfig, keep: float, n: int) -> float:
    """DaP keep ``keep``'s planned compute: the budget every row at that keep is matched to."""
    return TrainConfig.from_dict(base.to_dict() | {"keep": keep}).schedule.plan(n).compute_fraction


def full_entry(base: TrainConfig, seeds: list, n: int, here: Path, rows_of: Rows) -> Entry:
    return entry("full", "all data", "full", run_configs(base, ["full"], seeds, n), here / "table2f", rows_of)


def budget_entries(base: TrainConfig, seeds: list, n: int, here: Path, out: Path, rows_of: Rows) -> dict[float, list[Entry]]:
    """Per DaP keep of ``peers.KEEPS``, at its compute: the frontier's DaP, rs2 and DaP + floor (tuned),
    the budget rule once frontier_budgets.py has trained it, and each peer's validation winner."""
    beyond = frontier_beyond.rows(base, seeds, n, here / "frontier" / "beyond")
    picks = peers.picks(base, n, out)
    by_keep = {}
    for keep in peers.KEEPS:
        paper = TrainConfig.from_dict(base.to_dict() | {"keep": keep})
        dap_folder = here / frontier.FOLDERS[keep].relative_to(frontier.HERE)
        entries = [entry("dap", f"p {keep}, the paper's rule", "droppick", run_configs(paper, ["dap"], seeds, n),
                         dap_folder, rows_of)]
        for row in beyond:
            if row.keep == keep and row.label in ("rs2", "dap + floor"):
                kind = "baseline" if row.label == "rs2" else "droppick"
                entries.append(entry(row.label, row.setting, kind, row.configs, row.folder, rows_of))
        rule = fb.budget_candidate(base, budget_of(base, keep, n), n)
        ruled = entry("budget rule", rule.setting, "droppick", run_configs(rule.config, ["dap"], seeds, n),
                      here / "frontier" / "budgets" / rule.folder, rows_of)
        entries += [ruled] if ruled.row is not None else []
        for peer in peers.PEERS:
            c = picks[keep, peer]
            entries.append(Entry(LABELS[peer], "not tuned yet", None, "peer", []) if c is None else
                           entry(LABELS[peer], f"{c.setting}, tuned", "peer",
                                 run_configs(c.config, [c.config.policy], seeds, n), out / c.folder, rows_of))
        by_keep[keep] = entries
    return by_keep


def best(entries: list[Entry], kind: str) -> Optional[Entry]:
    """The finished entry of this kind with the best mean test top-1."""
    return max((e for e in entries if e.kind == kind and e.row is not None), key=lambda e: e.row["top1_mean"], default=None)


def lead(e: Entry, ref: Entry) -> tuple[float, str]:
    d = e.row["top1_mean"] - ref.row["top1_mean"]
    return d, noise_word(d, standard_error(e.row, ref.row))


def beats(e: Entry, ref: Optional[Entry]) -> bool:
    """Whether ``e`` is above ``ref`` by more than two standard errors."""
    if ref is None or e.row is None:
        return False
    d, word = lead(e, ref)
    return d > 0 and word == "beyond"


def over(e: Entry, budget: float) -> str:
    """A note on a row that spent more than the budget in step-equivalents (beyond ``OFF_BUDGET``)."""
    spend = e.row.get("step_equivalent_fraction", e.row["compute_fraction"])
    return f", spending {100 * spend:.1f}% in step-equivalents, over the budget" if spend > budget + OFF_BUDGET else ""


def spent(r: Optional[dict], key: str) -> str:
    """A share of all-data training; a rule without Selective Backprop's counts back-propagates what it forwards."""
    return "" if r is None else f"{100 * r.get(key, r['compute_fraction']):.1f}%"


def table(entries: list[Entry], full: Entry, dap: Optional[dict]) -> list[str]:
    ref = best(entries, "droppick")
    lines = ["| rule | setting | seeds | samples forwarded | back-propagated | step-equivalents | final top-1 (%) | "
             "vs full | vs DaP | vs droppick's best |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in [full, *entries]:
        r = e.row
        lines.append(f"| {e.label} | {e.setting} | {'' if r is None else r['seeds']} | {spent(r, 'compute_fraction')} | "
                     f"{spent(r, 'backprop_fraction')} | {spent(r, 'step_equivalent_fraction')} | {top1(r)} | "
                     f"{versus(r, full.row)} | {versus(r, dap)} | {versus(r, None if ref is None else ref.row)} |")
    return lines


def verdict(entries: list[Entry], budget: float, where: str) -> str:
    """Whether a peer beats droppick's best rule beyond two standard errors, said plainly."""
    ref = best(entries, "droppick")
    done = [e for e in entries if e.kind == "peer" and e.row is not None]
    waiting = [f"{e.label} ({e.setting})" for e in entries if e.kind == "peer" and e.row is None]
    tail = f" Not trained yet: {', '.join(waiting)}; this covers only the peers trained." if waiting and done else ""
    if ref is None:
        return f"- {where}: droppick's rules are not trained yet, so no peer is compared with them."
    if not done:
        return f"- {where}: no peer is trained yet: {', '.join(waiting)}."
    named = f"{ref.label} ({ref.setting}, {top1(ref.row)})"
    winners = [e for e in done if beats(e, ref)]
    if winners:
        return (f"- {where}: a peer beats droppick's best rule, {named}, beyond two standard errors: "
                + "; ".join(f"{e.label} ({e.setting}) is {lead(e, ref)[0]:+.2f} points over it{over(e, budget)}" for e in winners)
                + ". Here droppick's rules are not the best choice." + tail)
    return (f"- {where}: no peer beats droppick's best rule, {named}, beyond two standard errors: "
            + "; ".join(f"{e.label} {lead(e, ref)[0]:+.2f} ({lead(e, ref)[1]} two standard errors)" for e in done)
            + "." + tail)


def sentences(entries: list[Entry], budget: float, where: str) -> list[str]:
    done = [e for e in entries if e.row is not None]
    if not done:
        return [f"- {where}: nothing trained yet."]
    top = max(done, key=lambda e: e.row["top1_mean"])
    so_far = " of the rows trained so far" if len(done) < len(entries) else ""
    out = [f"- {where}: the best on test top-1{so_far} is {top.label} ({top.setting}), {top1(top.row)}."]
    off = [f"{e.label} {spent(e.row, 'step_equivalent_fraction')}" for e in done
           if abs(e.row.get("step_equivalent_fraction", e.row["compute_fraction"]) - budget) > OFF_BUDGET]
    if off:
        out.append(f"- {where}: measured step-equivalents more than {100 * OFF_BUDGET:.0f} point off the budget: "
                   f"{', '.join(off)}; those rows are not matched to it.")
    return out + [verdict(entries, budget, where)]


def rows_section(base: TrainConfig, seeds: list, n: int, here: Path, out: Path, rows_of: Rows,
                 tuning: str = "the tuning table below", peers: str = "The peers") -> tuple[list[str], dict, list[Entry]]:
    """The rows per budget and their sentences; also DaP's seed std per keep (for the tuning table) and the
    entries. ``tuning``: where the page that shows them has the tuning table; ``peers``: its heading's name for them."""
    full = full_entry(base, seeds, n, here, rows_of)
    lines = [f"## {peers} against droppick's rules", "",
             f"The frontier's 20,000-image slice, seeds {seeds} (mean ± std). Each peer's row is its validation winner "
             f"({tuning}). Compute is matched on step-equivalents: a training step (forward and backward) of "
             f"a sample counts 1 and a forward pass without gradients {FORWARD_COST:.3g} (the usual approximation, "
             "FORWARD_COST in src/droppick/policies/selective_backprop.py). Selective Backprop forwards every sample "
             "and back-propagates some, so its step-equivalents are its back-propagated samples plus a third of those "
             "forwarded to choose them; every other rule back-propagates what it forwards. vs: the difference of seed "
             "means, within or beyond two standard errors. droppick's rules: DaP, DaP + floor and the budget rule "
             "(`--target-compute`); droppick's best is the one of them with the best mean test top-1 at that budget "
             "(rs2, which droppick also implements, is a baseline here).", ""]
    dap_std, every = {}, [full]
    for keep, entries in budget_entries(base, seeds, n, here, out, rows_of).items():
        budget = budget_of(base, keep, n)
        every += entries
        dap = entries[0].row
        dap_std[keep] = None if dap is None else dap["top1_std"]
        where = f"At {100 * budget:.1f}% compute (DaP keep {keep})"
        lines += [f"### {100 * budget:.1f}% compute (DaP keep {keep})", "", *table(entries, full, dap), "",
                  *sentences(entries, budget, where)]
        if not any(e.label == "budget rule" for e in entries):
            lines.append("- The budget rule's row joins once frontier_budgets.py has trained it (it waits for the "
                         "rule's fit).")
        lines.append("")
    return lines, dap_std, every


def all_data_section(base: TrainConfig, n: int, here: Path, out: Path, rows_of: Rows) -> tuple[list[str], list[Entry]]:
    """The chosen peer on all 60,000 images beside the frontier's all-data rows; the lines and the entries."""
    everything = TrainConfig.from_dict(base.to_dict() | {"train_samples": None})
    full = entry("full", "all data", "full", run_configs(everything, ["full"], fb.ALL_SEEDS, fb.ALL_DATA),
                 here / "frontier" / "all-6000", rows_of)
    entries = [entry(r.label, r.setting, "baseline" if r.label == "rs2" else "droppick", r.configs, r.folder, rows_of)
               for r in frontier_beyond.all_data_rows(base, n, here / "frontier" / "beyond")]
    chosen = peers.all_data(base, n, out)
    if chosen is None:
        entries.append(Entry("the peers' best on validation", "not tuned yet", None, "peer", []))
    else:
        c, configs, folder = chosen
        entries.append(entry(LABELS[c.peer], f"{c.setting}, tuned", "peer", configs, folder, rows_of))
    picks = peers.picks(base, n, out)
    choice = ("not chosen yet: some peers' tuning runs at 44.6% are missing" if chosen is None else
              ", ".join(f"{LABELS[peer]} {peers.val_top1(picks[0.8, peer], out, n):.2f}" for peer in peers.PEERS)
              + f", so {LABELS[chosen[0].peer]}")
    lines = ["## All 60,000 images at 44.6% compute", "",
             f"Seeds {peers.ALL_SEEDS}, every training image, otherwise the frontier's setting; each rule re-solved for "
             "that N. The peer is the one whose winner at 44.6% has the best validation top-1, not the best test top-1 "
             f"on the 20,000-image slice: {choice}. Beside it, the frontier's all-data rows (DaP, rs2 and the rule it "
             "ranked first on validation) and full on all images."]
    dap = next((e.row for e in entries if e.label == "dap"), None)
    budget = budget_of(everything, 0.8, fb.ALL_DATA)
    return lines + ["", *table(entries, full, dap), "", *sentences(entries, budget, "On all 60,000 images"), ""], [full, *entries]


def tuning_section(base: TrainConfig, n: int, here: Path, out: Path, dap_std: dict) -> list[str]:
    tuning = here / "frontier" / "beyond" / "tuning"
    dap = {c.keep: frontier_beyond.val_top1(c, tuning, n) for c in frontier_beyond.tuning_candidates(base, n)
           if c.rule == "dap"}
    chosen = {c.folder for c in peers.winners(base, n, out)}
    lines = ["## Tuning on the validation split", "",
             f"Seed {peers.TUNE_SEED}, one run per candidate: {n:,} training images of a seeded "
             f"{n + peers.TUNE_VAL:,}-image slice, the other {peers.TUNE_VAL:,} (class-stratified) held out for "
             "validation; the best final validation top-1 per peer and budget wins (bold) and trains above. Test "
             "accuracy of these runs is never read. vs DaP: the difference from DaP's validation run at that budget "
             "(frontier_beyond.py's, the same slice and seed), within or beyond two standard errors of a difference "
             "of two single runs (DaP's seed std on the frontier x sqrt(2)).", "",
             "| DaP keep | peer | setting | final val top-1 (%) | vs DaP |", "| ---: | --- | --- | ---: | ---: |"]
    for c in peers.candidates(base, n):
        score = peers.val_top1(c, out, n)
        cell = "not trained yet" if score is None else f"**{score:.2f}**" if c.folder in chosen else f"{score:.2f}"
        d = None if score is None or dap.get(c.keep) is None else score - dap[c.keep]
        std = dap_std.get(c.keep)
        vs = "" if d is None else f"{d:+.2f}" + ("" if std is None else f" ({noise_word(d, std * math.sqrt(2))})")
        lines.append(f"| {c.keep} | {LABELS[c.peer]} | {c.setting} | {cell} | {vs} |")
    return lines + [""]


def readme_cells(base: TrainConfig, seeds: list, n: int, here: Path, rows_of: Rows) -> dict[float, list[str]]:
    """Per budget of the README's budget table, the best peer, its top-1 and its difference from
    droppick's best rule there; a peer that beats that rule beyond two standard errors is the one named."""
    cells = {}
    for keep, entries in budget_entries(base, seeds, n, here, here / "frontier" / "peers", rows_of).items():
        budget = budget_of(base, keep, n)
        ref = best(entries, "droppick")
        done = [e for e in entries if e.kind == "peer" and e.row is not None]
        if not done:
            cells[budget] = ["not trained yet", "", ""]
            continue
        e = max(done, key=lambda e: (beats(e, ref), e.row["top1_mean"]))
        vs = ""
        if ref is not None:
            d, word = lead(e, ref)
            outcome = ": the peer wins" if beats(e, ref) else ": droppick's wins" if word == "beyond" else ""
            vs = f"{d:+.2f} vs {ref.label} ({word}{outcome}{over(e, budget)})"
        cells[budget] = [f"{e.label} ({e.setting})", top1(e.row), vs]
    return cells


def write_page(base: TrainConfig, n: int, seeds: list, here: Path, out: Path, rows_of: Rows) -> Path:
    """The peers' page, and the README's budget table with the peers' cells (budgets_report.readme)."""
    rows, dap_std, entries = rows_section(base, seeds, n, here, out, rows_of)
    all_data, more = all_data_section(base, n, here, out, rows_of)
    tuning = [here / "frontier" / "beyond" / "tuning" / c.folder / "runs" / name
              for c in frontier_beyond.tuning_candidates(base, n) if c.rule == "dap"
              for name in frontier_beyond.tuning_configs(c, n)]  # the validation runs the tuning table compares with
    used = sorted({run for e in entries + more for run in e.runs} | {p.parent for p in (out / "tuning").rglob("summary.json")}
                  | {run for run in tuning if (run / "summary.json").exists()})
    lines = ["# The peers on the frontier: Selective Backprop, SeTa and DaP ranking by a score", "",
             f"Generated by `{' '.join([Path(sys.executable).name, *sys.argv])}` (from the repository root) on "
             f"{utc_now()} UTC at commit {code_version()['git_commit']}; machine (where the page was written; the runs "
             f"trained in the background of development sessions): {machine()}. " + training_commits(used), "",
             setting(peers.__doc__), "", *rows, *all_data, *tuning_section(base, n, here, out, dap_std)]
    out.mkdir(parents=True, exist_ok=True)
    page = out / "README.md"
    page.write_text("\n".join(lines).rstrip("\n") + "\n")
    write_readme_table(readme(base, n, seeds, here, here / "frontier" / "budgets", rows_of), base, n, seeds, here)
    return page
