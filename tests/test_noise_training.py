"""The noisy-label training script without training: the noise rules run on the budget rule's
schedule, the noise reaches the validation split, rho's holdout is that split and its compute comes out of
rho's budget, the rows' rules come from the split alone, and the page reads the targets from the rows."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
import fashion_mnist_frontier as frontier  # noqa: E402  (a broken import must fail, not skip)
import noise_training as nt  # noqa: E402
from droppick.policies.selective_backprop import FORWARD_COST  # noqa: E402
from droppick.schedule import for_budget  # noqa: E402
from droppick.train.config import TrainConfig  # noqa: E402


def test_the_noise_rules_run_on_the_budget_rules_schedule_with_the_noise_asked_for():
    budget = nt.rule(frontier.BASE, "pairs-20", "budget", None, frontier.N).config
    trusted = nt.rule(frontier.BASE, "pairs-20", "trusted", 0.2, frontier.N).config
    dap = nt.rule(frontier.BASE, "pairs-20", "dap", None, frontier.N).config
    rule = for_budget(budget.target_compute, frontier.N, 30, 4, 1, [15])
    assert (budget.keep, budget.min_keep, budget.policy) == (rule.keep, rule.min_keep, "dap")
    assert (trusted.keep, trusted.min_keep, trusted.policy, trusted.trusted_share) == (rule.keep, rule.min_keep, "trusted", 0.2)
    assert (dap.keep, dap.min_keep, dap.label_noise, dap.noise_kind) == (0.8, 0.0, 0.2, "pairs")
    uniform = nt.rule(frontier.BASE, "pairs-20", "uniform", "margin", frontier.N).config
    assert (uniform.policy, uniform.trusted_suspects, uniform.score, uniform.keep) == ("trusted", "uniform", "margin", rule.keep)
    clean = nt.rule(frontier.BASE, "clean", "budget", None, frontier.N).config
    assert (clean.label_noise, clean.policy, clean.keep) == (0.0, "dap", rule.keep)
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


VALIDATION = {("trusted", 0.2): (81.0, 80.0, 79.0), ("uniform", "loss"): (80.5, 80.5, 80.5),
              ("rho", 5): (80.0, 82.0, 78.0)}  # (symmetric-20, pairs-20, symmetric-40); any other candidate 70


def fake_tuning(out: Path) -> None:
    for r in nt.tuning_rules(frontier.BASE, frontier.N):
        run = out / "tuning" / r.folder / "runs" / f"{r.config.policy}-seed0"
        run.mkdir(parents=True)
        top1 = VALIDATION.get((r.rule, r.value), (70.0,) * 3)[list(nt.NOISE).index(r.noise)]
        (run / "summary.json").write_text(json.dumps({"final_val_top1": top1, "final_test_top1": 0.0}))


def test_the_rows_rules_are_the_baselines_each_settings_best_and_the_best_mean_and_wait_for_them(tmp_path):
    names = [(r.noise, r.rule, r.value) for r, _, _ in nt.rows(frontier.BASE, [0], frontier.N, tmp_path)]
    assert names == [(noise, rule, None) for noise in nt.NOISE for rule in nt.BASELINES] + [("clean", "budget", None)]
    fake_tuning(tmp_path)
    assert [nt.best(frontier.BASE, frontier.N, tmp_path, noise) for noise in nt.NOISE] == [
        ("trusted", 0.2), ("rho", 5), ("uniform", "loss")]
    assert nt.default(frontier.BASE, frontier.N, tmp_path) == ("uniform", "loss")  # mean 80.5, against 80.0 and 80.0
    names = [(r.noise, r.rule, r.value) for r, _, _ in nt.rows(frontier.BASE, [0], frontier.N, tmp_path)]
    baselines = [(rule, None) for rule in nt.BASELINES]
    assert names == ([("symmetric-20", *key) for key in [*baselines, ("trusted", 0.2), ("uniform", "loss")]]
                     + [("pairs-20", *key) for key in [*baselines, ("rho", 5), ("uniform", "loss")]]
                     + [("symmetric-40", *key) for key in [*baselines, ("uniform", "loss")]]  # best and default: one
                     + [("clean", "budget", None), ("clean", "uniform", "loss")])
    everything = [(r.noise, r.rule, r.value, r.config.train_samples, list(c))
                  for r, c in nt.all_data(frontier.BASE, frontier.N, tmp_path)]
    assert everything == [("symmetric-20", "full", None, None, ["full-seed0", "full-seed1"]),
                          ("symmetric-20", "rs2", None, None, ["rs2-seed0", "rs2-seed1"]),
                          ("symmetric-20", "trusted", 0.2, None, ["trusted-seed0", "trusted-seed1"]),
                          ("pairs-20", "full", None, None, ["full-seed0", "full-seed1"]),
                          ("pairs-20", "rs2", None, None, ["rs2-seed0", "rs2-seed1"]),
                          ("pairs-20", "rho", 5, None, ["rho-seed0", "rho-seed1"])]
    rho = nt.rule(TrainConfig.from_dict(frontier.BASE.to_dict() | {"train_samples": None}), "pairs-20", "rho", 5,
                  nt.ALL_DATA).config
    assert (rho.train_samples, rho.val_samples) == (None, nt.TUNE_VAL)  # its holdout comes out of the 60,000
    jobs = [folder for _, folder in nt.jobs(["rows"], frontier.BASE, [0], frontier.N, tmp_path)]
    assert [f.name for f in jobs[:2]] == ["c0.4464-budget", "uniform-loss"]  # the clean labels' rows train first
    assert len(jobs) == len(names)


def test_a_rule_keeps_none_of_the_budget_rules_epsilon_where_its_schedule_has_no_floor():
    # rho at 10 holdout epochs leaves the schedule a budget without a floor, where the budget rule's own
    # drops are epsilon-greedy: rho drops as rho, so the epsilon stays at its default (unread)
    rho = nt.rule(frontier.BASE, "symmetric-20", "rho", 10, frontier.N).config
    assert (rho.policy, rho.min_keep, rho.epsilon) == ("rho", 0.0, TrainConfig().epsilon)
    budget = nt.rule(frontier.BASE, "symmetric-20", "budget", None, frontier.N).config
    assert budget.policy == "dap"  # at 44.6% the rule has a floor: DaP's drops


def test_the_clean_labels_budget_rule_reads_the_budget_pages_runs_of_the_same_configs(tmp_path):
    import frontier_budgets

    [(r, configs, folder)] = [row for row in nt.rows(frontier.BASE, frontier.SEEDS, frontier.N, tmp_path)
                              if row[0].noise == "clean"]
    page = frontier_budgets.budget_candidate(frontier.BASE, r.config.target_compute, frontier.N)
    assert folder == nt.BUDGET_ROWS / page.folder and folder.name == "c0.4464-budget"
    assert configs == frontier_budgets.run_configs(page.config, ["dap"], frontier.SEEDS, frontier.N)


def fake_rows(out: Path, top1: dict) -> None:
    """Finished runs for the rows whose (noise, rule) ``top1`` lists, one test top-1 per seed."""
    for r, configs, folder in nt.rows(frontier.BASE, [0, 1, 2], frontier.N, out):
        for name, value in zip(configs, top1.get((r.noise, r.rule), [])):
            run = folder / "runs" / name
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps({
                "final_test_top1": value, "best_test_top1": value, "compute_fraction": 0.446,
                "planned_compute_fraction": 0.446, "train_seconds": 1.0, "wall_seconds": 1.0}))
            (run / "metrics.jsonl").write_text(json.dumps({"test_top1": value, "subset_size": 100,
                                                           "subset_wrong_labels": 7}) + "\n")


def test_the_page_reads_each_target_from_the_rows_with_two_standard_errors(tmp_path, monkeypatch):
    import noise_report

    monkeypatch.setattr(nt, "BUDGET_ROWS", tmp_path / "budgets")  # not the repository's runs
    out = tmp_path / "training"  # the page goes beside it
    fake_tuning(out)
    fake_rows(out, {("symmetric-20", "trusted"): [86.0, 86.2, 86.4], ("symmetric-20", "full"): [85.0, 85.2, 85.4],
                         ("symmetric-20", "rs2"): [86.5, 86.6, 86.7],
                         ("symmetric-40", "uniform"): [80.0, 80.1, 80.2], ("symmetric-40", "rs2"): [79.0, 79.0, 79.0],
                         ("clean", "budget"): [88.0, 88.2, 88.4], ("clean", "uniform"): [87.9, 88.1, 88.3],
                         ("pairs-20", "rho"): [84.0, 84.1]})
    page = noise_report.write_page(frontier.BASE, frontier.N, [0, 1, 2], out).read_text()
    assert page == (tmp_path / "README.md").read_text()
    assert ("- symmetric-20: trusted (top share out), trusted_share 0.2 86.20 against full training 85.20: +1.00 "
            "(beyond two standard errors, 0.33); at or above: met.") in page
    assert "- symmetric-20: trusted (top share out), trusted_share 0.2 86.20 against rs2 86.60: -0.40" in page
    assert "at or above: not met, by 0.40." in page
    assert "- pairs-20: RHO-LOSS, rho_epochs 5 against full training: not all seeds trained yet." in page
    assert "- symmetric-40: trusted (worse than a uniform guess out), score loss 80.10 against rs2 79.00: +1.10" in page
    assert ("- clean labels: the default (trusted (worse than a uniform guess out), score loss) 88.10 against the "
            "budget rule 88.20: -0.10 (within two standard errors, 0.33); within two standard errors: met.") in page
    assert "| RHO-LOSS, rho_epochs 5 | 0.446 | 84.05 ± 0.07 | 2 of 3 | 7.0% |" in page  # a partial row says so
    assert "| trusted (top share out), trusted_share 0.2 | 81.00 (best) | 80.00 | 79.00 | 80.00 |" in page
    assert "| trusted (worse than a uniform guess out), score loss | 80.50 | 80.50 | 80.50 (best) | 80.50 (default) |" in page


def test_the_readmes_line_on_noisy_labels_waits_for_the_defaults_rows_then_names_its_flags(tmp_path, monkeypatch):
    import noise_report

    monkeypatch.setattr(nt, "BUDGET_ROWS", None)  # under tmp_path too
    out = tmp_path / "training"
    fake_tuning(out)
    assert noise_report.readme_line(frontier.BASE, frontier.N, [0, 1, 2], out).startswith("On noisy labels: not measured yet")
    fake_rows(out, {(noise, "uniform"): [80.0 + i, 80.2 + i, 80.4 + i] for i, noise in enumerate([*nt.NOISE, *nt.CLEAN])})
    line = noise_report.readme_line(frontier.BASE, frontier.N, [0, 1, 2], out)
    assert ("the rule with the best mean noisy-validation top-1 is trusted (worse than a uniform guess out), score loss: "
            "`--policy trusted --trusted-suspects uniform --score loss` on the budget rule's schedule (test top-1 "
            "symmetric-20 80.20, pairs-20 81.20, symmetric-40 82.20, clean 83.20;") in line
