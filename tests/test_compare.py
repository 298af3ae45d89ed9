"""compare (resumable, matched compute, report), inspect, and the budget solver on tiny data."""

import json
import statistics

import pytest
import torch

from droppick import DaPSchedule
from droppick.budget import solve
from droppick.cli.main import main
from droppick.train.config import TrainConfig

TINY = ["--epochs", "4", "--warmup", "1", "--interval", "1", "--keep", "0.5", "--reuse-at", "3",
        "--batch-size", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def compared(fake_fashion, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "report"
    args = ["compare", "--data-dir", str(fake_fashion), *TINY, "--policies", "full,dap,random,scaled,static,infobatch,rs2",
            "--seeds", "2", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    return out, args


def test_report_has_every_policy_at_matched_compute(compared):
    out, _ = compared
    rows = json.loads((out / "report.json").read_text())
    assert list(rows) == ["full", "dap", "random", "scaled", "static", "infobatch", "rs2"]
    dap = DaPSchedule(4, 1, 1, 0.5, None, [3]).plan(240).compute_fraction
    assert rows["full"]["compute_fraction"] == 1.0
    for policy in ("dap", "random"):
        assert rows[policy]["compute_fraction"] == pytest.approx(dap)
    for policy in ("static", "rs2"):  # the same number of samples every epoch, DaP's compute rounded
        assert rows[policy]["compute_fraction"] == pytest.approx(round(dap * 240) / 240)
    assert rows["scaled"]["compute_fraction"] == pytest.approx(round(4 * dap) / 4)
    assert abs(rows["infobatch"]["compute_fraction"] - dap) <= 0.01  # calibrated to DaP's plan
    for r in rows.values():
        assert r["seeds"] == 2 and len(r["top1_per_seed"]) == 2
        assert r["top1_std"] == pytest.approx(statistics.stdev(r["top1_per_seed"]))
        assert r["top1_mean"] == pytest.approx(statistics.fmean(r["top1_per_seed"]))
        assert r["top1_vs_full"] == pytest.approx(r["top1_mean"] - rows["full"]["top1_mean"])
    report = (out / "report.md").read_text()
    for policy in rows:
        assert f"| {policy} | 2 |" in report
    for png in ("accuracy_vs_epoch.png", "subset_vs_epoch.png", "accuracy_vs_compute.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"({png})" in report


def test_compare_reuses_finished_runs(compared, capsys):
    out, args = compared
    summaries = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")}
    assert len(summaries) == 14
    assert main(args) == 0
    assert "done, reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")} == summaries


def test_inspect_writes_grids_and_class_rates(compared, capsys):
    out, _ = compared
    run = out / "runs" / "dap-seed0"
    assert main(["inspect", str(run)]) == 0
    data = json.loads((run / "inspect.json").read_text())
    assert len(data["classes"]) == 10 and sum(c["samples"] for c in data["classes"]) == 240
    assert all(0 < c["keep_rate"] <= 1 for c in data["classes"])
    assert len(data["hardest"]) == 32 and len(data["easiest"]) == 32
    assert (run / "hardest.png").read_bytes()[:4] == b"\x89PNG" and (run / "easiest.png").stat().st_size > 5000
    full = json.loads((out / "runs" / "full-seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert full["subset_size"] == 240


def test_unknown_policy_is_refused(capsys):
    assert main(["compare", "--policies", "full,hardest"]) == 2
    assert "unknown policies ['hardest']" in capsys.readouterr().err


@pytest.mark.parametrize("param,target", [("keep", 0.63), ("interval", 0.75), ("warmup", 0.7), ("active", 0.92)])
def test_budget_solver_lands_close(param, target):
    base = DaPSchedule(300, 40, 10, 0.9, None, [150])
    schedule, compute = solve(base, 50000, target, param)
    assert compute == schedule.plan(50000).compute_fraction
    assert abs(compute - target) < 0.02
    others = {k: v for k, v in schedule.to_dict().items() if k != param}
    assert others == {k: v for k, v in base.to_dict().items() if k != param}


def test_plan_cli_solve(capsys):
    assert main(["plan", "--target-compute", "0.63", "--solve", "keep", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["solved"] == "keep" and abs(out["compute_fraction"] - 0.63) < 0.005
    assert main(["plan", "--solve", "keep"]) == 2  # a hyper-parameter to solve needs the compute to solve for
    assert "--solve needs --target-compute" in capsys.readouterr().err


@pytest.mark.parametrize("target", [0.55, 0.7, 0.85])
def test_calibrated_infobatch_spends_its_target_compute(target):
    """Losses whose below-mean share drifts from 90% to 50% over the run (a fixed ratio set for
    70% would miss): the calibrated ratio follows what it observes."""
    from droppick import DropAndPick

    schedule = DaPSchedule(epochs=16, warmup=1, interval=1, keep=0.9, reuse_at=[])
    dap = DropAndPick(1000, schedule, policy="infobatch", seed=0, target_compute=target, infobatch_delta=0.875)
    gen = torch.Generator().manual_seed(0)
    while not dap.done:
        order = dap.sampler().indices()
        share = 0.9 - 0.4 * (dap.epoch - 1) / 15  # of samples with a low loss
        low = torch.rand(order.numel(), generator=gen) < share
        dap.record(order, torch.where(low, 0.1, 1.0 + torch.rand(order.numel(), generator=gen)))
        dap.end_epoch()
    assert abs(dap.compute_fraction - target) <= 0.01, dap.policy.ratios
    assert len(set(round(r, 3) for r in dap.policy.ratios)) > 1  # it did adapt


def test_infobatch_run_of_the_trainer_lands_on_its_target(fake_fashion, tmp_path):
    from droppick.train.trainer import train

    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=8, warmup=1, interval=1, keep=0.5, reuse_at=[],
                      policy="infobatch", target_compute=0.75, batch_size=64, device="cpu")
    summary = train(cfg, tmp_path / "run")
    assert abs(summary["compute_fraction"] - 0.75) <= 0.01


def test_compare_restarts_a_run_interrupted_before_its_first_checkpoint(fake_fashion, tmp_path):
    from droppick.report.compare import run_all, run_configs
    from droppick.train.config import TrainConfig

    base = TrainConfig(data_dir=str(fake_fashion), epochs=2, warmup=1, interval=1, keep=0.5, reuse_at=[],
                       batch_size=64, device="cpu")
    configs = run_configs(base, ["dap"], [0], 240)
    run = tmp_path / "runs" / "dap-seed0"
    run.mkdir(parents=True)
    configs["dap-seed0"].save(run / "config.json")
    (run / "metrics.jsonl").write_text("")  # what a crash inside epoch 1 leaves behind
    summaries = run_all(configs, tmp_path, log=lambda _: None)
    assert summaries["dap-seed0"]["epochs"] == 2

    changed = run_configs(TrainConfig.from_dict(base.to_dict() | {"keep": 0.7}), ["dap"], [0], 240)
    with pytest.raises(ValueError, match=r"was made with other settings \(keep=0.5, now keep=0.7\)"):
        run_all(changed, tmp_path, log=lambda _: None)


def test_config_precedence_defaults_recipe_flags_set(tmp_path):
    from droppick.cli.main import _config_from_args, build_parser

    parse = build_parser().parse_args
    cfg = _config_from_args(parse(["train", "--recipe", "cifar10-resnet110-dap63"]))
    assert (cfg.lr, cfg.keep, cfg.momentum, cfg.augment_padding) == (0.1, 0.9, 0.9, 4)  # recipe, then defaults
    cfg = _config_from_args(parse(["train", "--recipe", "cifar10-resnet110-dap63", "--keep", "0.8"]))
    assert cfg.keep == 0.8  # a flag beats the recipe
    cfg = _config_from_args(parse(["train", "--recipe", "cifar10-resnet110-dap63", "--keep", "0.8", "--set", "keep=0.7"]))
    assert cfg.keep == 0.7 and cfg.recipe == "cifar10-resnet110-dap63"  # --set beats both


def test_galleries_rank_ties_by_loss():
    """Most samples tie on epochs trained and on drop epoch; the loss decides among them."""
    from droppick.report.inspection import hardest_and_easiest
    from droppick.train.retention import Retention

    r = Retention(8)
    losses = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6])
    r.update(torch.arange(8), torch.tensor([1, 2, 3, 5, 7]), epoch=1, losses=losses)  # 0, 4, 6 dropped
    r.update(torch.tensor([1, 2, 3, 5, 7]), torch.tensor([1, 3, 5, 7]), epoch=2,
             losses=torch.tensor([float("inf"), 0.4, 0.35, 0.95, float("inf"), 0.1, float("inf"), 0.2]))
    kept, dropped = hardest_and_easiest(r, count=8)
    # trained twice: 1 (last 0.4), 3 (0.95), 5 (0.1), 7 (0.2), 2 (0.35): highest last loss first
    assert kept.tolist() == [3, 1, 2, 7, 5, 4, 6, 0]  # then the once-trained: 0.3, 0.2, 0.1
    # dropped after epoch 1 (0: 0.1, 4: 0.3, 6: 0.2), lowest loss first; then 2, dropped after 2
    assert dropped.tolist() == [0, 6, 4, 2]
    assert r.drop_loss[2] == pytest.approx(0.35) and r.last_loss[3] == pytest.approx(0.95)


def test_inspect_keep_rates_equal_those_of_the_subsets_the_run_trained_on(fake_fashion, tmp_path, monkeypatch):
    import hashlib

    from droppick.report.inspection import inspect_run
    from droppick.train.rundir import RunDir
    from droppick.train.trainer import Trainer, train

    trained = []
    real = Trainer.train_and_decide

    def recording(self, progress):
        trained.append(self.dap.subset.clone())
        return real(self, progress)

    monkeypatch.setattr(Trainer, "train_and_decide", recording)
    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=5, warmup=1, interval=1, keep=0.6, reuse_at=[3],
                      batch_size=64, device="cpu")
    train(cfg, tmp_path / "run")
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [hashlib.sha256(s.numpy().tobytes()).hexdigest() for s in trained] == [r["subset_sha256"] for r in rows]
    result = inspect_run(tmp_path / "run", out=tmp_path / "inspect")
    assert len(json.loads((tmp_path / "inspect" / "inspect.json").read_text())["hardest"]) == 32
    counts = torch.zeros(240, dtype=torch.float64)
    for subset in trained:
        counts[subset] += 1
    from droppick.train.splits import build_splits

    y = build_splits(cfg)[0].labels
    for row in result["classes"]:
        members = y == row["class"]
        assert row["keep_rate"] == pytest.approx(float(counts[members].mean() / 5), abs=1e-12)
        assert row["mean_epochs_trained"] == pytest.approx(float(counts[members].mean()), abs=1e-12)
