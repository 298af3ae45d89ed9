"""The budget rule's experiments without training: the winner is read from validation only, the fit
is computed from the tuned floors, the rule's own runs wait for the fit, and the committed constant
is the fit of the committed runs."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import budget_regimes  # noqa: E402  (a broken import must fail, not skip)
import fashion_mnist_frontier as frontier  # noqa: E402
import frontier_beyond  # noqa: E402
import frontier_budgets as fb  # noqa: E402
import droppick.budget  # noqa: E402
import droppick.schedule  # noqa: E402
from droppick.budget import budget_rule  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def write_summary(run: Path, **values) -> None:
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(values))


def write_budget_tuning(tuning: Path, val_top1, test_top1=lambda c: 0.0) -> None:
    for c in fb.tuning_candidates(frontier.BASE, frontier.N):
        (name,) = fb.tuning_configs(c, frontier.N)
        write_summary(tuning / c.folder / "runs" / name, final_val_top1=val_top1(c), final_test_top1=test_top1(c))


def write_paper_floor_tuning(tuning: Path, floors: dict) -> None:
    """frontier_beyond's tuning runs, in which the floor ``floors[keep]`` wins at each keep."""
    for c in frontier_beyond.tuning_candidates(frontier.BASE, frontier.N):
        (name,) = frontier_beyond.tuning_configs(c, frontier.N)
        score = 90.0 if c.rule == "floor" and c.value == floors[c.keep] else 80.0
        write_summary(tuning / c.folder / "runs" / name, final_val_top1=score, final_test_top1=100.0 - score)


def test_the_winner_is_read_from_validation_whatever_the_test_accuracy(tmp_path):
    # the W = 2 floor 0.24 at 35% scores best on validation and worst on test
    favoured = {"warmup": 2, "min_keep": 0.24}
    write_budget_tuning(tmp_path, lambda c: 85.0 + (c.changes == favoured), lambda c: 99.0 - 10 * (c.changes == favoured))
    candidates = fb.tuning_candidates(frontier.BASE, frontier.N)
    best = fb.winner(candidates, 0.35, tmp_path, frontier.N)
    assert best.changes == favoured and best.config.warmup == 2 and best.config.min_keep == 0.24
    assert abs(best.config.schedule.plan(frontier.N).compute_fraction - 0.35) < 0.001
    assert fb.winner(candidates, 0.25, tmp_path, frontier.N).changes == {}  # a tie: the first in the grid, DaP


def test_the_fit_is_the_mean_share_and_the_rules_runs_wait_for_it(tmp_path, monkeypatch):
    out = tmp_path / "budgets"
    assert fb.tuned_floors(frontier.BASE, frontier.N, out) is None and not fb.rule_is_final(frontier.BASE, frontier.N, out)
    write_paper_floor_tuning(tmp_path / "beyond" / "tuning", {0.8: 0.3, 0.9: 0.5})
    winners = {0.35: {"warmup": 2, "min_keep": 0.15}, 0.25: {"warmup": 2, "epsilon": 0.8}}
    write_budget_tuning(out / "tuning", lambda c: 95.0 if c.changes == {"warmup": 2, "min_keep": 0.35} else
                        90.0 if c.changes == winners.get(c.budget) else 80.0)  # W = 2's 0.35 beats 0.3 at 44.6%
    points = fb.tuned_floors(frontier.BASE, frontier.N, out)
    # largest floors at the winners' own warm-up, and at the rule's (W = 2, the most common): 0.569 at 62.7%
    assert [(round(p.budget, 4), p.floor, p.largest, p.warmup, p.at_rule_warmup, p.epsilon) for p in points] == [
        (0.25, 0.0, 0.134, 2, 0.134, 0.8), (0.35, 0.15, 0.25, 2, 0.25, 0.0), (0.4464, 0.35, 0.361, 2, 0.361, 0.0),
        (0.6267, 0.5, 0.533, 4, 0.569, 0.0)]
    assert fb.fitted_warmup_share(points, 4) == 0.5
    assert fb.fitted_warmup_share(points[:1] + points[3:], 4) == 1.0  # one W = 2, one W = 4: the longer
    share = round((0.15 / 0.25 + 0.35 / 0.361 + 0.5 / 0.533) / 3, 3)  # the winners with a floor only
    assert fb.fitted_share(points) == share
    # 25%'s winner has no floor (0.134 at W = 2), every other has one (0.25 and more): the threshold between
    assert fb.min_floor_range(points) == (0.134, 0.25) and fb.fitted_min_floor(points) == 0.192
    labels = [r[0].rule for r in fb.rows(frontier.BASE, [0], frontier.N, out)]
    assert "budget" not in labels and labels.count("floor") == labels.count("epsilon") == 1  # the rule waits
    assert labels.count("dap") == 2
    # the winner without a floor drops epsilon-greedy with eps 0.8: the rule's random share
    assert fb.fitted_constants(frontier.BASE, points) == (0.5, 0.192, share, 0.8) and fb.fitted_random_share(
        points[1:]) is None
    for module in (fb, droppick.schedule):
        monkeypatch.setattr(module, "FLOOR_SHARE", share)
        monkeypatch.setattr(module, "MIN_FLOOR", 0.192)
    monkeypatch.setattr(droppick.budget, "RANDOM_SHARE", 0.8)
    monkeypatch.setattr(fb, "LIBRARY", (1.0, 0.192, share, 0.8))
    assert not fb.rule_is_final(frontier.BASE, frontier.N, out)  # WARMUP_SHARE is not the fit yet
    monkeypatch.setattr(fb, "LIBRARY", (0.5, 0.192, share, 0.8))
    rows = fb.rows(frontier.BASE, [0], frontier.N, out)
    budget = [c for c, _ in rows if c.rule == "budget"]
    assert [round(c.budget, 4) for c in budget] == [0.35, 0.25, 0.4464, 0.6267]
    for c in budget:
        rule = budget_rule(c.budget, frontier.N, 30, 4, 1, [15])
        assert (c.config.schedule, c.config.policy) == (rule.schedule, rule.policy)
    assert [(c.config.warmup, c.config.min_keep > 0, c.config.policy) for c in budget] == [
        (2, True, "dap"), (2, False, "epsilon"), (2, True, "dap"), (2, True, "dap")]
    assert [c.config.target_compute for c in budget] == [0.35, None, budget[2].budget, budget[3].budget]
    # 25%'s winner (epsilon-greedy, W = 2, eps 0.8) is the budget rule there: it trains once, in the
    # winner's folder; the rule's schedule with DaP's drops (its first form) in the rule's
    assert [(c.rule, c.folder) for c, _ in rows if c.budget == 0.25] == [
        ("budget", "c0.25-epsilon-epsilon-0.8-warmup-2"), ("dap", "c0.25-dap"), ("rs2", "c0.25-rs2"),
        ("budget-dap", "c0.25-budget")]
    [dap_drops] = [c for c, _ in rows if c.rule == "budget-dap"]
    assert (dap_drops.config.policy, dap_drops.config.schedule) == ("dap", budget[1].config.schedule)
    [(everything, configs)] = fb.all_data_rows(frontier.BASE, frontier.N, out)
    assert [cfg.train_samples for cfg in configs.values()] == [None, None] and everything.budget == 0.35


def test_the_regimes_reuse_the_frontiers_runs_only_where_the_settings_are_the_same(tmp_path):
    here, out = tmp_path, tmp_path / "frontier" / "budgets"
    by_rule = {(r.slug, rule): budget_regimes.folder(r, rule, here, out)
               for r in budget_regimes.REGIMES for rule in budget_regimes.RULES}
    assert by_rule[("2000", "dap")] == here / "frontier" / "keep-0.8" and by_rule[("600", "full")] == here / "redundancy"
    assert by_rule[("long-tail", "full")] == out / "regimes" / "long-tail" / "full"
    tail = budget_regimes.REGIMES[2]
    configs = budget_regimes.rule_configs(frontier.BASE, tail, "budget", [0, 1, 2])
    assert {(c.imbalance, c.policy, c.min_keep > 0) for c in configs.values()} == {(10.0, "dap", True)}
    # 44.6% on the frontier's slice is one set of runs: the regime's rule is the budget row's
    rule_row = fb.budget_candidate(frontier.BASE, fb.rule_budgets(frontier.BASE, frontier.N)[2], frontier.N)
    slice_rule = budget_regimes.rule_configs(frontier.BASE, budget_regimes.REGIMES[1], "budget", [0])
    assert next(iter(slice_rule.values())) == fb.run_configs(rule_row.config, ["dap"], [0], frontier.N)["dap-seed0"]
    assert by_rule[("2000", "budget")] == out / rule_row.folder


def test_the_committed_floor_share_is_the_fit_of_the_committed_tuning_runs():
    """The rule's constants are typed into the library (droppick.schedule, droppick.budget); they must
    be what the committed runs fit: every tuning run of the grid is committed (a candidate added to it
    lands with its run) and the fit is the library's."""
    points = fb.tuned_floors(frontier.BASE, frontier.N, frontier.OUT / "budgets")
    assert points is not None, "a tuning run of frontier_budgets.py is not committed: train --part tune, commit it"
    assert fb.fitted_constants(frontier.BASE, points) == fb.LIBRARY == (
            droppick.schedule.WARMUP_SHARE, droppick.schedule.MIN_FLOOR, droppick.schedule.FLOOR_SHARE,
            droppick.budget.RANDOM_SHARE)


@pytest.mark.parametrize("part", ["tune", "rows", "all-data", "regimes"])
def test_each_part_is_named_in_the_scripts_usage(part):
    assert f"--part {part}" in fb.__doc__


def test_the_regimes_train_the_budget_rule_only_once_it_is_final(tmp_path, monkeypatch):
    here, out = tmp_path, tmp_path / "frontier" / "budgets"
    jobs = fb.regime_jobs(frontier.BASE, [0], frontier.N, here, out)
    assert len(jobs) == 3 * 3 and not any(cfg.min_keep > 0 for configs, _ in jobs for cfg in configs.values())
    monkeypatch.setattr(fb, "rule_is_final", lambda base, n, out: True)
    jobs = fb.regime_jobs(frontier.BASE, [0], frontier.N, here, out)
    assert len(jobs) == 3 * 4 and out / "c0.4464-budget" in [folder for _, folder in jobs]


def test_a_short_warm_up_at_the_papers_budgets_competes_with_the_frontiers_floors(tmp_path):
    out = tmp_path / "budgets"
    write_paper_floor_tuning(tmp_path / "beyond" / "tuning", {0.8: 0.3, 0.9: 0.5})  # their floors: 90 on validation
    favoured = {"warmup": 2, "min_keep": 0.35}  # W = 2 at DaP keep 0.8's compute: 95
    write_budget_tuning(out / "tuning", lambda c: 95.0 if c.changes == favoured else 80.0)
    points = {round(p.budget, 4): p for p in fb.tuned_floors(frontier.BASE, frontier.N, out)}
    at_44, at_63 = points[0.4464], points[0.6267]
    assert (at_44.warmup, at_44.floor, at_44.largest) == (2, 0.35, 0.361)
    assert (at_63.warmup, at_63.floor, at_63.largest) == (4, 0.5, 0.533)  # the frontier's floor still wins there


def test_the_close_call_at_25_percent_trains_the_winner_and_rs2_with_three_seeds(tmp_path):
    out = tmp_path / "budgets"
    assert fb.close_call(frontier.BASE, frontier.N, out) == []  # no winner yet: nothing to compare
    write_budget_tuning(out / "tuning", lambda c: 90.0 if (c.rule, c.changes) == ("dap", {"warmup": 2}) else 80.0)
    (ours, ours_runs), (rs2, rs2_runs), (challenger, _) = fb.close_call(frontier.BASE, frontier.N, out)
    assert (ours.budget, ours.changes, rs2.rule, challenger.rule) == (0.25, {"warmup": 2}, "rs2", "epsilon")
    assert list(rs2_runs) == ["rs2-seed0", "rs2-seed1", "rs2-seed2"] and list(ours_runs)[0] == "dap-seed0"
    assert {cfg.val_samples for cfg in [*ours_runs.values(), *rs2_runs.values()]} == {fb.TUNE_VAL}
    # seed 0 is the tuning run itself, so the close call reuses it
    assert ours_runs["dap-seed0"] == next(iter(fb.tuning_configs(ours, frontier.N).values()))
