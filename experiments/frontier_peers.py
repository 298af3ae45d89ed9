"""The peers on the frontier (issue 34): Selective Backprop, SeTa, and DaP ranking by a score other than
the loss (EL2N, the margin; with and without the floor), at the compute of DaP's keep 0.8 and 0.9
(44.6% and 62.7%) on the frontier's 20,000-image slice, their settings tuned on a validation split,
beside the frontier's DaP, rs2 and the budget rule. From the repository root:

    .venv/bin/python experiments/frontier_peers.py --part tune    # every candidate on the validation split
    .venv/bin/python experiments/frontier_peers.py --part rows    # each peer's winner, 3 seeds
    .venv/bin/python experiments/frontier_peers.py --part all-data  # the best of them on all 60,000 images
    .venv/bin/python experiments/frontier_peers.py --report       # only rewrite the page (peers_report.py)

Setting: the frontier's (experiments/fashion_mnist_frontier.py). Selective Backprop forwards every
sample of a selecting batch without gradients, about a third of a training step each, so its budget
is matched on step-equivalents: with ``sb_interrupt`` 0 (no whole batches) and selection from epoch
``sb_start``, a run costs (S - 1 + (E - S + 1)(1/3 + keep)) / E of all-data training, and keep is
solved for the budget (it needs a budget above (S - 1)/E + (E - S + 1)/(3E)). SeTa spends what its
losses make it spend; ``target_compute`` recalibrates its random share every epoch. The scores
(``--score el2n|margin``) change only what DaP ranks: the paper's p, and the floor the frontier tuned
at that budget with its p (frontier_beyond.py), so their compute is DaP's. Tuning: one run
per candidate, seed 0, 20,000 training images of a 30,000-image slice whose other 10,000 are the
validation split; the best final validation top-1 per peer and budget trains with 3 seeds. All
60,000 images: of the three winners at 44.6%, the one with the best validation top-1 (the first in
``PEERS`` on a tie) trains with seeds 0 and 1 on every training image, its setting re-solved for
that N as the frontier's all-data rows are. The script never reads a tuning run's test accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple, Optional

import _jobs
import frontier_beyond
from _report import log
from droppick.policies.selective_backprop import FORWARD_COST
from droppick.report.compare import run_configs
from droppick.train.config import TrainConfig

TUNE_VAL, TUNE_SEED = 10_000, 0
ALL_DATA, ALL_SEEDS = 60_000, [0, 1]  # as the frontier's all-data rows (frontier_beyond.py)
KEEPS = (0.8, 0.9)  # the budgets: DaP's planned compute at these keeps
SB_STARTS = (1, 5)  # from the first epoch, or after the frontier's warm-up of 4
SETA_GRID = [{"seta_groups": g, "seta_window": w} for g in (3, 5, 10) for w in (0.5, 0.9)]
SCORES = ("el2n", "margin")
FLOORS = {0.8: 0.3, 0.9: 0.5}  # the floors frontier_beyond.py's tuning chose at these budgets (its page)
PEERS = ("selective_backprop", "seta", "score")  # a winner per peer and budget


class Candidate(NamedTuple):
    keep: float  # the DaP keep whose compute it matches
    peer: str
    setting: str
    config: TrainConfig
    folder: str


SB_LEAST_KEEP = 0.05  # below this a selecting batch back-propagates a few samples: no candidate worth a run


def sb_keep(budget: float, epochs: int, start: int) -> Optional[float]:
    """The keep that spends ``budget`` in step-equivalents (module docstring); None if out of reach or
    below ``SB_LEAST_KEEP`` (at 44.6% from epoch 5: keep 0.028, 3 samples of a batch of 128)."""
    selecting = epochs - start + 1
    keep = (budget * epochs - (start - 1)) / selecting - FORWARD_COST
    return round(keep, 3) if SB_LEAST_KEEP <= keep <= 1 else None


def candidates(base: TrainConfig, n: int) -> list[Candidate]:
    out = []
    for keep in KEEPS:
        at = base.to_dict() | {"keep": keep}
        budget = TrainConfig.from_dict(at).schedule.plan(n).compute_fraction
        for start in SB_STARTS:
            k = sb_keep(budget, base.epochs, start)
            if k is not None:
                cfg = TrainConfig.from_dict(at | {"policy": "selective_backprop", "sb_keep": k, "sb_start": start,
                                                  "sb_interrupt": 0})
                out.append(Candidate(keep, "selective_backprop", f"keep {k}, from epoch {start}", cfg,
                                     f"keep-{keep}-sb-start-{start}"))
        for grid in SETA_GRID:
            cfg = TrainConfig.from_dict(at | {"policy": "seta", "target_compute": budget} | grid)
            out.append(Candidate(keep, "seta", f"groups {grid['seta_groups']}, window {grid['seta_window']}", cfg,
                                 f"keep-{keep}-seta-{grid['seta_groups']}-{grid['seta_window']}"))
        for score in SCORES:
            for rule, value in (("dap", None), ("floor", FLOORS[keep])):
                ranked = frontier_beyond.candidate(base, keep, rule, value, n)
                cfg = TrainConfig.from_dict(ranked.config.to_dict() | {"score": score})
                out.append(Candidate(keep, "score", f"{score}, {ranked.setting}", cfg,
                                     f"{ranked.folder}-score-{score}"))
    return out


def tuning(c: Candidate, n: int) -> TrainConfig:
    return TrainConfig.from_dict(c.config.to_dict() | {"train_samples": n + TUNE_VAL, "val_samples": TUNE_VAL,
                                                       "seed": TUNE_SEED})


def val_top1(c: Candidate, out: Path, n: int) -> Optional[float]:
    path = out / "tuning" / c.folder / "runs" / f"{c.config.policy}-seed{TUNE_SEED}" / "summary.json"
    return json.loads(path.read_text())["final_val_top1"] if path.exists() else None


def picks(base: TrainConfig, n: int, out: Path) -> dict[tuple[float, str], Optional[Candidate]]:
    """Per (budget, peer), the best validation top-1 (the first in the grid on a tie), None until all
    its tuning runs are in."""
    pool = candidates(base, n)
    chosen = {}
    for keep in KEEPS:
        for peer in PEERS:
            group = [c for c in pool if c.keep == keep and c.peer == peer]
            scores = [val_top1(c, out, n) for c in group]
            chosen[keep, peer] = group[scores.index(max(scores))] if group and None not in scores else None
    return chosen


def winner(base: TrainConfig, n: int, out: Path, keep: float, peer: str) -> Optional[Candidate]:
    return picks(base, n, out)[keep, peer]


def winners(base: TrainConfig, n: int, out: Path) -> list[Candidate]:
    """Per budget and peer, the best validation top-1 (first in the grid on a tie), once all its runs are in."""
    return [c for c in picks(base, n, out).values() if c is not None]


def all_data_choice(base: TrainConfig, n: int, out: Path) -> Optional[Candidate]:
    """The peers' winner at 44.6% (keep 0.8) with the best validation top-1 (the first in ``PEERS``
    on a tie), None until every peer's tuning runs at that budget are in: chosen on validation, as
    the frontier chooses its rule for all the data, never on the 20,000-image rows' test accuracy."""
    chosen = picks(base, n, out)
    at = [chosen[0.8, peer] for peer in PEERS]
    if None in at:
        return None
    return max(at, key=lambda c: val_top1(c, out, n))  # max keeps the first of equal scores


def all_data(base: TrainConfig, n: int, out: Path) -> Optional[tuple[Candidate, dict[str, TrainConfig], Path]]:
    """The chosen peer on all 60,000 images, 2 seeds: the same candidate (its folder) with its setting
    re-solved for that N (Selective Backprop's keep, SeTa's target, the score's p), and its folder."""
    pick = all_data_choice(base, n, out)
    if pick is None:
        return None
    everything = TrainConfig.from_dict(base.to_dict() | {"train_samples": None})
    [c] = [c for c in candidates(everything, ALL_DATA) if c.folder == pick.folder]
    return c, run_configs(c.config, [c.config.policy], ALL_SEEDS, ALL_DATA), out / "all-60000" / c.folder


def jobs(parts: list[str], base: TrainConfig, seeds: list[int], n: int, out: Path) -> _jobs.Jobs:
    found: _jobs.Jobs = []
    if "tune" in parts:
        found += [({f"{c.config.policy}-seed{TUNE_SEED}": tuning(c, n)}, out / "tuning" / c.folder)
                  for c in candidates(base, n)]
    if "rows" in parts:
        found += [(run_configs(c.config, [c.config.policy], seeds, n), out / c.folder) for c in winners(base, n, out)]
    if "all-data" in parts and (chosen := all_data(base, n, out)) is not None:
        found.append(chosen[1:])
    return found


def main() -> None:
    from fashion_mnist_frontier import BASE, HERE, N, OUT, SEEDS, rows_of

    args = _jobs.arguments(__doc__, ["tune", "rows", "all-data"],
                           "train this part (repeatable): a peer's rows once its tuning runs at the budget are in, "
                           "all-data once every peer's at 44.6% are")
    out = OUT / "peers"
    if not args.report:
        _jobs.train(jobs(args.part, BASE, SEEDS, N, out), *args.share)
    from peers_report import write_page

    log(f"page written to {write_page(BASE, N, SEEDS, HERE, out, rows_of)}")


if __name__ == "__main__":
    main()
