"""The one knob: ``--target-compute C`` and ``DaPSchedule.for_budget``, the budget rule's schedule,
its refusals, and a run that spends what was asked."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from droppick import DaPSchedule, DropAndPick, budget_rule
import droppick.schedule
from droppick.budget import RANDOM_SHARE, describe_budget
from droppick.schedule import (FLOOR_SHARE, MIN_FLOOR, TOLERANCE, for_budget, largest_floor, rule_warmup,
                               smallest_compute)
from droppick.cli.main import main
from droppick.train.config import TrainConfig

FRONTIER = dict(epochs=30, warmup=4, interval=1, reuse_at=[15])  # the frontier's schedule, without p


@pytest.mark.parametrize("compute", [0.21, 0.25, 0.35, 0.446, 0.5, 0.627, 0.8, 0.99])
@pytest.mark.parametrize("n", [20000, 60000, 1_281_167])
def test_the_budget_rule_plans_the_compute_asked_for_with_its_share_of_the_largest_floor(compute, n):
    schedule = DaPSchedule.for_budget(compute=compute, num_samples=n, **FRONTIER)
    assert abs(schedule.plan(n).compute_fraction - compute) <= TOLERANCE
    largest = largest_floor(dataclasses.replace(schedule, min_keep=0.0), n, compute)
    if largest >= MIN_FLOOR:
        assert schedule.min_keep == int(FLOOR_SHARE * largest * 1000) / 1000 and 0 < schedule.min_keep < largest
    else:
        assert schedule.min_keep == 0.0 and compute < 0.3  # no floor: only the lowest budgets
    assert schedule.warmup == rule_warmup(DaPSchedule(keep=1.0, **FRONTIER), n, compute) == 2  # half of 4
    assert (schedule.epochs, schedule.interval, schedule.reuse_at) == (30, 1, (15,))


def test_the_rule_halves_the_warm_up_and_drops_the_floor_only_where_the_largest_is_small(monkeypatch):
    # largest floors on N = 20,000 with W = 2: 0.134 at 25%, 0.25 at 35% (0.187 with W = 4)
    assert (for_budget(0.25, 20000, **FRONTIER).min_keep, for_budget(0.35, 20000, **FRONTIER).min_keep) == (
        0.0, int(FLOOR_SHARE * 0.25 * 1000) / 1000)
    monkeypatch.setattr(droppick.schedule, "MIN_FLOOR", 0.26)  # above 35%'s largest floor: no floor there either
    assert for_budget(0.35, 20000, **FRONTIER).min_keep == 0.0
    monkeypatch.setattr(droppick.schedule, "WARMUP_SHARE", 1.0)
    assert for_budget(0.446, 20000, **FRONTIER).warmup == 4 and for_budget(0.446, 20000, **FRONTIER).min_keep > 0
    monkeypatch.undo()
    assert for_budget(0.35, 20000, **FRONTIER, fixed_warmup=True).warmup == 4  # the caller's warm-up kept
    assert for_budget(0.35, 20000, **(FRONTIER | {"warmup": 5})).warmup == 2  # rounded down
    assert for_budget(0.35, 20000, **(FRONTIER | {"warmup": 1})).warmup == 0
    # below W = 2's smallest compute (0.1333) but not W = 0's: the rule shortens further rather than refuse
    assert for_budget(0.12, 20000, **FRONTIER).warmup == 1 and for_budget(0.09, 20000, **FRONTIER).warmup == 0
    assert "warm-up 2 instead of 4" in describe_budget(for_budget(0.35, 20000, **FRONTIER), 20000, 0.35, 4)
    assert "no floor (the largest" in describe_budget(for_budget(0.25, 20000, **FRONTIER), 20000, 0.25, 4)


def test_the_rules_drops_are_epsilon_greedy_only_where_it_has_no_floor():
    low, high = budget_rule(0.25, 20000, **FRONTIER), budget_rule(0.35, 20000, **FRONTIER)
    assert (low.schedule, high.schedule) == (for_budget(0.25, 20000, **FRONTIER), for_budget(0.35, 20000, **FRONTIER))
    assert (low.policy, low.epsilon, low.schedule.min_keep) == ("epsilon", RANDOM_SHARE, 0.0)
    assert (high.policy, high.epsilon) == ("dap", None) and high.schedule.min_keep > 0
    assert budget_rule(1.0, 20000, **FRONTIER).policy == "dap"  # all data: nothing to drop
    assert low.engine_args == {"schedule": low.schedule, "policy": "epsilon", "epsilon": RANDOM_SHARE}
    assert high.engine_args == {"schedule": high.schedule, "policy": "dap"}
    engine = DropAndPick(num_samples=20000, seed=0, **low.engine_args)
    assert engine.policy.params() == {"epsilon": RANDOM_SHARE}
    assert abs(engine.plan().compute_fraction - 0.25) <= TOLERANCE
    why = describe_budget(low.schedule, 20000, 0.25, 4)
    assert why.startswith(f"budget 0.25: epsilon-greedy drops (epsilon {RANDOM_SHARE}") and "no floor" in why
    mine = describe_budget(low.schedule, 20000, 0.25, 4, yours="policy dap")
    assert mine.startswith("budget 0.25: policy dap (yours; the rule's drops here: epsilon-greedy drops")
    assert describe_budget(high.schedule, 20000, 0.35, 4).startswith("budget 0.35: DaP, ")


def test_the_largest_floor_is_the_last_one_within_the_budget():
    base = DaPSchedule(keep=1e-9, **FRONTIER)
    for compute in (0.25, 0.35, 0.446, 0.627):
        f = largest_floor(base, 20000, compute)
        spend = [dataclasses.replace(base, min_keep=x).plan(20000).compute_fraction for x in (f, f + 0.001)]
        assert spend[0] <= compute < spend[1]
    # the frontier's tuned floors, 0.3 at DaP keep 0.8's compute and 0.5 at keep 0.9's, sit just under the largest
    at = {p: dataclasses.replace(base, keep=p).plan(20000).compute_fraction for p in (0.8, 0.9)}
    assert largest_floor(base, 20000, at[0.8]) == 0.308 and largest_floor(base, 20000, at[0.9]) == 0.533


def test_the_smallest_compute_is_the_share_of_epochs_on_all_data():
    # W = 4, the epoch that records the first drop's losses, and the pick's epoch 16: 6 of 30 epochs
    least = smallest_compute(DaPSchedule(keep=0.9, **FRONTIER), 20000)
    assert least == (6 * 20000 + 24 * 1) / (30 * 20000)
    assert smallest_compute(DaPSchedule(epochs=30, warmup=1, interval=1, keep=0.9), 20000) < least


def test_the_budget_rule_refuses_what_it_cannot_plan_and_says_what_to_change():
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        for_budget(1.2, 20000, **FRONTIER)
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        for_budget(0.0, 20000, **FRONTIER)
    with pytest.raises(ValueError, match=r"below the smallest this schedule allows, 0\.2000.*ask for at least 0\.2000"):
        for_budget(0.15, 20000, **FRONTIER, fixed_warmup=True)
    # without a warm-up to keep, the smallest is W = 0's: the epoch that records losses and the pick's
    with pytest.raises(ValueError, match=r"smallest this schedule allows, 0\.0667.*remove a pick"):
        for_budget(0.05, 20000, **FRONTIER)
    with pytest.raises(ValueError, match="train on more samples"):
        for_budget(0.41, 4, **FRONTIER)  # 4 samples: compute moves in steps of 1/120, no p lands within 0.005
    assert for_budget(1.0, 20000, **FRONTIER).plan(20000).compute_fraction == 1.0


def test_plan_alone_chooses_the_budget_rule_and_with_solve_keeps_its_meaning(capsys):
    frontier = ["--epochs", "30", "--warmup", "4", "--interval", "1", "--reuse-at", "15", "--num-samples", "20000"]
    assert main(["plan", *frontier, "--target-compute", "0.35", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    rule = for_budget(0.35, 20000, **FRONTIER, fixed_warmup=True)  # --warmup given: kept
    assert out["schedule"] == rule.to_dict() and abs(out["compute_fraction"] - 0.35) <= TOLERANCE
    [why] = captured.err.splitlines()
    assert why.startswith(f"budget 0.35: epsilon-greedy drops (epsilon {RANDOM_SHARE}") and "frontier/budgets/README.md" in why
    # with W = 4 kept, 35% leaves a largest floor of 0.187, under MIN_FLOOR: no floor, so epsilon-greedy drops
    assert rule.min_keep == 0.0 and "no floor (the largest this schedule allows at this budget, 0.187" in why
    assert (out["policy"], out["epsilon"]) == ("epsilon", RANDOM_SHARE)
    assert main(["plan", *frontier[:2], *frontier[4:], "--target-compute", "0.35", "--json"]) == 0  # W = 2: a floor
    captured = capsys.readouterr()
    assert json.loads(captured.out)["policy"] == "dap" and "\nbudget 0.35: DaP, warm-up 2 instead of 4" in captured.err
    assert main(["plan", *frontier, "--target-compute", "0.35", "--solve", "keep", "--json"]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["solved"] == "keep" and "min_keep" not in solved["schedule"]  # today's meaning: keep alone
    assert main(["plan", *frontier, "--keep", "0.8", "--json"]) == 0  # without a budget: the schedule as given
    assert json.loads(capsys.readouterr().out)["schedule"]["keep"] == 0.8


@pytest.mark.parametrize("extra, named", [(["--keep", "0.8"], "--keep"), (["--min-keep", "0.2"], "--min-keep"),
                                          (["--keep", "0.8", "--min-keep", "0.2"], "--keep and --min-keep")])
def test_a_budget_beside_keep_or_min_keep_is_refused_with_the_fix(extra, named, capsys, fake_fashion, tmp_path):
    assert main(["plan", "--target-compute", "0.5", *extra]) == 2
    err = capsys.readouterr().err
    assert f"remove {named}," in err and "--policy dap --keep P" in err
    assert main(["train", "--data-dir", str(fake_fashion), "--target-compute", "0.5", *extra,
                 "--out", str(tmp_path / "r")]) == 2
    assert f"remove {named}," in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_train_with_a_budget_runs_the_rule_and_spends_the_budget(fake_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--data-dir", str(fake_fashion), "--epochs", "10", "--warmup", "1", "--interval", "1", "--reuse-at",
              "5", "--batch-size", "64", "--no-progress", "--device", "cpu"]
    assert main(["train", *common, "--target-compute", "0.45", "--out", str(out)]) == 0
    assert "budget 0.45: DaP, " in capsys.readouterr().err
    saved = TrainConfig.load(out / "config.json")
    rule = for_budget(0.45, 240, 10, 1, 1, [5], fixed_warmup=True)
    assert (saved.keep, saved.min_keep, saved.target_compute, saved.policy) == (rule.keep, rule.min_keep, 0.45, "dap")
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["compute_fraction"] - 0.45) <= TOLERANCE
    # rs2 matches the budget itself; full has none to spend
    assert main(["train", *common, "--policy", "rs2", "--target-compute", "0.45", "--out", str(tmp_path / "rs2")]) == 0
    assert abs(json.loads((tmp_path / "rs2" / "summary.json").read_text())["compute_fraction"] - 0.45) <= 0.01
    assert main(["train", *common, "--policy", "full", "--target-compute", "0.45", "--out", str(tmp_path / "f")]) == 2
    assert "remove --target-compute" in capsys.readouterr().err


def test_train_without_a_policy_takes_the_rules_drops_and_with_one_keeps_it(fake_fashion, tmp_path, capsys):
    common = ["--data-dir", str(fake_fashion), "--epochs", "10", "--warmup", "1", "--interval", "1", "--reuse-at",
              "5", "--batch-size", "64", "--no-progress", "--device", "cpu", "--target-compute", "0.4"]
    rule = budget_rule(0.4, 240, 10, 1, 1, [5], fixed_warmup=True)  # no floor at this budget: epsilon-greedy
    assert (rule.policy, rule.schedule.min_keep) == ("epsilon", 0.0)
    assert main(["train", *common, "--out", str(tmp_path / "rule")]) == 0
    assert "budget 0.4: epsilon-greedy drops" in capsys.readouterr().err
    saved = TrainConfig.load(tmp_path / "rule" / "config.json")
    assert (saved.policy, saved.epsilon, saved.schedule) == ("epsilon", RANDOM_SHARE, rule.schedule)
    assert main(["train", *common, "--policy", "dap", "--out", str(tmp_path / "dap")]) == 0
    assert "budget 0.4: policy dap (yours; the rule's drops here: epsilon-greedy" in capsys.readouterr().err
    saved = TrainConfig.load(tmp_path / "dap" / "config.json")
    assert (saved.policy, saved.schedule) == ("dap", rule.schedule)
    # compare trains each of its --policies on the rule's schedule: the line says so
    from droppick.cli.main import _config_from_args, build_parser
    args = build_parser().parse_args(["compare", *common, "--policies", "dap,rs2", "--out", str(tmp_path / "c")])
    assert _config_from_args(args).schedule == rule.schedule
    assert "budget 0.4: each of --policies (yours; the rule's drops here: epsilon-greedy" in capsys.readouterr().err
    for run in ("rule", "dap"):  # the same schedule: the same compute, whatever the drops
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert abs(summary["compute_fraction"] - 0.4) <= TOLERANCE


def test_the_readmes_budget_lines_run_as_printed_and_train_the_rule_its_table_names(real_fashion_dir, tmp_path):
    from test_readme_commands import blocks, command_lines, section

    text = section("Which policy for which budget")
    [plan, train] = command_lines(blocks(text)[0])
    assert plan[:2] == ["droppick", "plan"] and train[:2] == ["droppick", "train"] and "--target-compute" in train
    env = dict(os.environ, OMP_NUM_THREADS="1")
    droppick = str(Path(sys.executable).parent / "droppick")
    proc = subprocess.run([droppick, *train[1:]], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / train[train.index("--out") + 1]
    saved = TrainConfig.load(out / "config.json")
    summary = json.loads((out / "summary.json").read_text())
    n, c = summary["num_train_samples"], float(train[train.index("--target-compute") + 1])
    rule = for_budget(c, n, saved.epochs, 4, saved.interval, saved.reuse_at)  # no --warmup: at most 30 epochs' 4
    assert (saved.warmup, saved.keep, saved.min_keep, saved.policy) == (rule.warmup, rule.keep, rule.min_keep, "dap")
    assert "--warmup" not in train and n == 2000
    assert abs(summary["compute_fraction"] - c) <= TOLERANCE
    # the table beside the lines names what for_budget chooses at each of its budgets on N = 20,000
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import fashion_mnist_frontier as frontier
    import frontier_budgets

    block = text.split("<!-- budget-rule:start")[1].split("<!-- budget-rule:end -->")[0]
    rows = [line.split(" | ") for line in block.splitlines() if line.startswith("| ") and "%" in line.split(" | ")[0]]
    budgets = sorted(frontier_budgets.rule_budgets(frontier.BASE, frontier.N))
    assert [cells[0].strip("| ") for cells in rows] == [f"{100 * b:.1f}%" for b in budgets]
    for cells, budget in zip(rows, budgets):
        named = frontier_budgets.budget_candidate(frontier.BASE, budget, frontier.N)
        rule = budget_rule(budget, 20000, 30, 4, 1, [15])
        assert (named.config.schedule, named.config.policy) == (rule.schedule, rule.policy)
        assert cells[1] in ("not fitted yet", named.setting), cells


def test_the_policies_pages_budget_block_runs_as_written():
    from test_library_api import readme_block, user_namespace

    ns = user_namespace()
    exec(readme_block("budget_rule(compute="), ns)
    schedule, dap, rule = ns["schedule"], ns["dap"], ns["rule"]
    assert schedule == for_budget(0.25, 60, **FRONTIER) and schedule.min_keep == 0
    assert (rule.policy, dap.policy.params()) == ("epsilon", {"epsilon": RANDOM_SHARE})
    assert abs(dap.plan().compute_fraction - 0.25) <= TOLERANCE
