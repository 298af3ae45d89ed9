"""End-to-end training on tiny generated Fashion-MNIST files: accounting, run directory, resume."""

import json
import math
import re

import pytest
import torch

import droppick
from droppick.train.config import TrainConfig
from droppick.data.in_memory import make_fake_fashion_mnist
from droppick.train.rundir import RunDir
from droppick.distributed import subset_sha256
from droppick.train.trainer import train


def tiny_config(data_dir, **kw):
    base = dict(data_dir=str(data_dir), model="small_cnn", epochs=5, warmup=1, interval=1, keep=0.6,
                reuse_at=[3], batch_size=32, lr=0.05, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


def metrics_without_timings(run_dir):
    return [{k: v for k, v in m.items() if not k.endswith("seconds")} for m in RunDir(run_dir).read_metrics()]


def test_measured_compute_equals_plan_and_run_dir_is_complete(fake_fashion, tmp_path):
    cfg = tiny_config(fake_fashion)
    summary = train(cfg, tmp_path / "run")
    plan = cfg.schedule.plan(240)
    assert summary["compute_fraction"] == pytest.approx(plan.compute_fraction, abs=1e-12)
    assert summary["compute_fraction"] < 1.0 and summary["planned_compute_fraction"] == plan.compute_fraction
    for key in ("final_test_top1", "best_test_top1", "wall_seconds", "policy", "seed"):
        assert key in summary
    assert summary["code"]["droppick"] == droppick.__version__ and summary["code"]["torch"] == torch.__version__
    assert summary["code"]["git_commit"] is None or re.fullmatch(r"[0-9a-f]{4,40}", summary["code"]["git_commit"])
    from droppick.train.summary import LOADED_CODE  # the commit this process imported, not HEAD at the run's end

    assert summary["code"] == LOADED_CODE
    metrics = RunDir(tmp_path / "run").read_metrics()
    assert [m["subset_size"] for m in metrics] == list(plan.subset_sizes)
    assert [m["samples_seen"] for m in metrics] == list(plan.subset_sizes)
    assert [m["lr"] for m in metrics] == [0.05, 0.05, 0.05, pytest.approx(0.005), pytest.approx(0.005)]
    full_hash = subset_sha256(torch.arange(240))
    assert [m["subset_sha256"] == full_hash for m in metrics] == [True, True, False, True, False]
    for m in metrics:
        assert set(m) >= {"epoch", "lr", "subset_size", "samples_seen", "train_loss", "test_top1",
                          "epoch_seconds", "subset_sha256"}
        assert math.isfinite(m["train_loss"]) and 0 <= m["test_top1"] <= 100
    run = RunDir(tmp_path / "run")
    assert json.loads(run.config_path.read_text())["keep"] == 0.6
    assert [p.name for p in run.checkpoints()] == ["checkpoint-0004.pt", "checkpoint-0005.pt"]


def test_tiny_model_learns_above_chance(fake_fashion, tmp_path):
    summary = train(tiny_config(fake_fashion, policy="full", epochs=4), tmp_path / "run")
    assert summary["best_test_top1"] > 30.0  # 10 classes: chance is 10%


def test_resume_equals_uninterrupted_run(fake_fashion, tmp_path):
    cfg = tiny_config(fake_fashion, policy="random")
    straight = train(cfg, tmp_path / "straight")
    assert train(cfg, tmp_path / "split", stop_after=2) is None
    resumed = train(None, tmp_path / "split", resume=True)
    assert metrics_without_timings(tmp_path / "straight") == metrics_without_timings(tmp_path / "split")
    a = RunDir(tmp_path / "straight").latest_checkpoint()
    b = RunDir(tmp_path / "split").latest_checkpoint()
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert torch.equal(a["dap"]["subset"], b["dap"]["subset"])
    assert resumed["final_test_top1"] == straight["final_test_top1"]


def test_existing_run_is_never_overwritten(fake_fashion, tmp_path):
    cfg = tiny_config(fake_fashion, epochs=2, reuse_at=[])
    train(cfg, tmp_path / "run", stop_after=1)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_resume_with_a_dataset_of_another_size_is_refused(tmp_path):
    data = make_fake_fashion_mnist(tmp_path / "data", n_train=100, n_test=20)
    train(tiny_config(data, epochs=3), tmp_path / "run", stop_after=1)
    make_fake_fashion_mnist(tmp_path / "data", n_train=120, n_test=20)
    with pytest.raises(ValueError, match="num_samples=100 into one with num_samples=120"):
        train(None, tmp_path / "run", resume=True)


def test_corrupt_newest_checkpoint_falls_back_to_previous(fake_fashion, tmp_path):
    cfg = tiny_config(fake_fashion, epochs=4)
    straight = train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "run", stop_after=3)
    newest = RunDir(tmp_path / "run").checkpoints()[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # truncated, as by a crash of the disk
    before = RunDir(tmp_path / "run").read_metrics()
    resumed = train(None, tmp_path / "run", resume=True)
    assert resumed["final_test_top1"] == straight["final_test_top1"]
    # resumed from checkpoint 2, not started over: epochs 1-2 were not retrained (their timings are the first run's)
    assert RunDir(tmp_path / "run").read_metrics()[:2] == before[:2] and len(before) == 3
    assert metrics_without_timings(tmp_path / "run") == metrics_without_timings(tmp_path / "straight")


def test_missing_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        train(tiny_config(tmp_path / "nowhere"), tmp_path / "run")


@pytest.mark.real_data
def test_short_run_on_real_fashion_mnist(real_fashion_dir, tmp_path):
    cfg = TrainConfig(data_dir=str(real_fashion_dir), train_samples=3000, test_samples=500, epochs=3, warmup=1,
                      interval=1, keep=0.5, reuse_at=[], batch_size=64, device="cpu")
    summary = train(cfg, tmp_path / "run")
    assert summary["num_train_samples"] == 3000 and summary["num_test_samples"] == 500
    assert summary["compute_fraction"] == pytest.approx((3000 + 3000 + 1500) / 9000)
    assert summary["best_test_top1"] > 50.0  # chance is 10%; 140 steps of a small CNN are enough


def test_cudnn_autotunes_only_full_batches(fake_fashion, monkeypatch):
    # DaP's last batch takes a new size almost every epoch; autotuning each one cost ~2 s on a GPU.
    from droppick.train.trainer import Trainer

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    cfg = TrainConfig(data_dir=str(fake_fashion), train_samples=100, epochs=2, warmup=1, interval=1, keep=0.5,
                      reuse_at=[], batch_size=32, device="cpu")
    t = Trainer(cfg, torch.device("cpu"))
    seen = []
    t.net.register_forward_hook(lambda m, inp, out: seen.append((len(inp[0]), torch.backends.cudnn.benchmark)))
    t.train_epoch(progress=False)
    assert seen == [(32, True), (32, True), (32, True), (4, False)]
    assert torch.backends.cudnn.benchmark  # restored after the partial batch
