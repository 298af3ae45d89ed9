"""The peers' frontier script without training: Selective Backprop's keep spends the budget in
step-equivalents, SeTa gets the budget as its target, and winners come from validation only."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import fashion_mnist_frontier as frontier  # noqa: E402  (a broken import must fail, not skip)
import frontier_peers as peers  # noqa: E402
from droppick.policies.selective_backprop import FORWARD_COST  # noqa: E402


def test_selective_backprops_keep_spends_the_budget_in_step_equivalents():
    for c in peers.candidates(frontier.BASE, frontier.N):
        budget = frontier.BASE.__class__.from_dict(frontier.BASE.to_dict() | {"keep": c.keep}).schedule.plan(
            frontier.N).compute_fraction
        if c.peer == "selective_backprop":
            s, e, k = c.config.sb_start, c.config.epochs, c.config.sb_keep
            assert ((s - 1) + (e - s + 1) * (FORWARD_COST + k)) / e == pytest.approx(budget, abs=0.001)
            assert c.config.sb_interrupt == 0
        elif c.peer == "seta":
            assert c.config.target_compute == budget
        else:  # a score: DaP's rule (or the tuned floor) ranking by it, at DaP's compute
            assert c.config.score in peers.SCORES and c.config.policy == "dap"
            assert c.config.schedule.plan(frontier.N).compute_fraction == pytest.approx(budget, abs=0.005)
    assert {c.peer for c in peers.candidates(frontier.BASE, frontier.N)} == set(peers.PEERS)
    assert peers.sb_keep(0.3, 30, 5) is None  # 4 whole epochs and a third of the rest already spend more


def test_each_peers_winner_is_its_best_validation_run(tmp_path):
    group = [c for c in peers.candidates(frontier.BASE, frontier.N) if c.keep == 0.8 and c.peer == "seta"]
    for i, c in enumerate(group):
        run = tmp_path / "tuning" / c.folder / "runs" / "seta-seed0"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"final_val_top1": 80.0 + (i == 3), "final_test_top1": 99.0 - i}))
    [best] = [c for c in peers.winners(frontier.BASE, frontier.N, tmp_path) if c.keep == 0.8]
    assert best == group[3]


def test_the_scores_floors_are_the_ones_the_frontier_tuned():
    import frontier_beyond

    tuning = frontier_beyond.tuning_candidates(frontier.BASE, frontier.N)
    for keep, floor in peers.FLOORS.items():
        chosen = frontier_beyond.chosen(tuning, keep, "floor", frontier.OUT / "beyond" / "tuning", frontier.N)
        assert chosen is not None and chosen.value == floor
