"""The noisy-label training script without training: the noise rules run on the budget rule's
schedule, the noise reaches the validation split, rho's holdout is that split and its compute comes out of
rho's budget, and each rule's setting comes from the split alone."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import fashion_mnist_frontier as frontier  # noqa: E402  (a broken import must fail, not skip)
import noise_training as nt  # noqa: E402
from droppick.policies.selective_backprop import FORWARD_COST  # noqa: E402
from droppick.schedule import for_budget  # noqa: E402


def test_the_noise_rules_run_on_the_budget_rules_schedule_with_the_noise_asked_for():
    budget = nt.rule(frontier.BASE, "pairs-20", "budget", None, frontier.N).config
    trusted = nt.rule(frontier.BASE, "pairs-20", "trusted", 0.2, frontier.N).config
    dap = nt.rule(frontier.BASE, "pairs-20", "dap", None, frontier.N).config
    rule = for_budget(budget.target_compute, frontier.N, 30, 4, 1, [15])
    assert (budget.keep, budget.min_keep, budget.policy) == (rule.keep, rule.min_keep, "dap")
    assert (trusted.keep, trusted.min_keep, trusted.policy, trusted.trusted_share) == (rule.keep, rule.min_keep, "trusted", 0.2)
    assert (dap.keep, dap.min_keep, dap.label_noise, dap.noise_kind) == (0.8, 0.0, 0.2, "pairs")
    tuning = nt.tuning_rules(frontier.BASE, frontier.N)
    assert {r.config.val_samples for r in tuning} == {nt.TUNE_VAL} and {r.config.label_noise for r in tuning} == {0.2, 0.4}


def test_rhos_holdout_is_the_noisy_validation_split_and_its_compute_comes_out_of_the_budget():
    tuning = nt.tuning_rules(frontier.BASE, frontier.N)
    rho = [r for r in tuning if r.rule == "rho"]
    assert sorted({r.value for r in rho}) == [2, 5, 10] and {r.noise for r in rho} == set(nt.NOISE)
    trusted = next(r for r in tuning if r.rule == "trusted" and r.noise == "symmetric-40")
    for r in (r for r in rho if r.noise == "symmetric-40"):
        # the tuning's validation split, carved alike: the same slice, seed and noise as the other rules'
        split = ("train_samples", "val_samples", "seed", "label_noise", "noise_kind")
        assert [getattr(r.config, k) for k in split] == [getattr(trusted.config, k) for k in split]
        assert (r.config.policy, r.config.rho_epochs) == ("rho", r.value)
    budget = nt.rule(frontier.BASE, "pairs-20", "budget", None, frontier.N).config.target_compute
    for epochs in (2, 5, 10):
        row = nt.rule(frontier.BASE, "pairs-20", "rho", epochs, frontier.N).config  # a row: 3 seeds, test accuracy
        assert (row.train_samples, row.val_samples, row.label_noise) == (frontier.N + nt.TUNE_VAL, nt.TUNE_VAL, 0.2)
        holdout = (nt.TUNE_VAL * epochs + FORWARD_COST * frontier.N) / (30 * frontier.N)
        rule = for_budget(budget - holdout, frontier.N, 30, 4, 1, [15])
        assert (row.keep, row.min_keep, row.rho_epochs) == (rule.keep, rule.min_keep, epochs)
        assert row.schedule.plan(frontier.N).compute_fraction + holdout == pytest.approx(budget, abs=0.005)


def test_a_rules_setting_is_its_best_noisy_validation_run_and_rows_wait_for_it(tmp_path):
    assert [r.rule for r, _ in nt.rows(frontier.BASE, [0], frontier.N, tmp_path)][:4] == ["full", "dap", "rs2", "budget"]
    for r in nt.tuning_rules(frontier.BASE, frontier.N):
        run = tmp_path / "tuning" / r.folder / "runs" / f"{r.config.policy}-seed0"
        run.mkdir(parents=True)
        best = r.value in (0.2, 5)
        (run / "summary.json").write_text(json.dumps({"final_val_top1": 80.0 + best, "final_test_top1": 0.0}))
    assert nt.tuned(frontier.BASE, frontier.N, tmp_path, "symmetric-40", "trusted") == 0.2
    assert nt.tuned(frontier.BASE, frontier.N, tmp_path, "pairs-20", "rho") == 5
    names = [(r.noise, r.rule, r.value) for r, _ in nt.rows(frontier.BASE, [0], frontier.N, tmp_path)]
    assert ("symmetric-40", "trusted", 0.2) in names and ("pairs-20", "window", 0.2) in names and len(names) == 21
    assert ("symmetric-20", "rho", 5) in names
