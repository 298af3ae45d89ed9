"""Bad input and faults: each a clear message (or, opted in, a logged exclusion), never silence.

Covered elsewhere, not repeated here: Fashion-MNIST label files with labels >= 10
(test_data.py::test_load_fashion_mnist_bad_labels), a missing data dir (test_cli.py,
test_train.py), impossible schedules (test_schedule.py::test_invalid_hyperparameters_are_refused),
a corrupt image (test_datasets.py::test_folder_dataset_corrupt_image_names_file), a reduced loss
handed to record() (test_engine.py), a dataset of another size on resume (test_train.py), another
world size on resume (test_distributed.py).
"""

import json
import random
import re

import numpy as np
import pytest
import torch

from droppick import DaPSchedule, DropAndPick, NonFiniteLossError
from droppick.cli.main import main
from droppick.train.config import TrainConfig
from droppick.train.rundir import RunDir
from droppick.train.trainer import Trainer, train


def tiny_config(data_dir, **kw):
    # 4 epochs on 240 images: warm-up, drop after epoch 2, pick after epoch 3
    base = dict(data_dir=str(data_dir), model="small_cnn", epochs=4, warmup=1, interval=1, keep=0.6,
                reuse_at=[3], batch_size=64, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


def inject_nan(monkeypatch, epoch):
    """Make the first training sample of ``epoch`` produce a NaN loss whose gradient poisons
    the whole batch (as a real overflow does). Returns a list that receives that sample's index."""
    forward, hit = Trainer._forward, []

    def nan_forward(self, module, images):
        logits = forward(self, module, images)
        if module.training and self.dap.epoch == epoch and not hit:
            hit.append(int(self.dap.sampler(self.rank, self.world).indices()[0]))
            scale = torch.ones_like(logits[:, :1])
            scale[0] = float("nan")
            logits = logits * scale  # multiplied, not assigned: the NaN reaches every gradient
        return logits

    monkeypatch.setattr(Trainer, "_forward", nan_forward)
    return hit


def test_nan_loss_stops_the_run_and_leaves_the_last_good_checkpoint_untouched(fake_fashion, tmp_path, monkeypatch):
    cfg = tiny_config(fake_fashion)
    train(cfg, tmp_path / "run", stop_after=2)
    run = RunDir(tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}

    inject_nan(monkeypatch, epoch=3)
    with pytest.raises(NonFiniteLossError, match=r"epoch 3: non-finite loss for \d+ samples.*--exclude-nonfinite"):
        train(None, run.path, resume=True)
    after = {p.name: p.read_bytes() for p in run.path.iterdir()}
    assert after == before  # no checkpoint-0003, checkpoint-0002 and metrics byte for byte
    monkeypatch.undo()
    assert train(None, run.path, resume=True)["epochs"] == 4  # the good checkpoint still resumes


def test_exclude_nonfinite_logs_the_sample_skips_the_step_and_trains_on(fake_fashion, tmp_path, monkeypatch):
    hit = inject_nan(monkeypatch, epoch=2)
    summary = train(tiny_config(fake_fashion, exclude_nonfinite=True), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    # Exactly one sample: had the step not been skipped, NaN weights would make every later loss NaN.
    assert [json.loads(line) for line in run.nonfinite_path.read_text().splitlines()] == [{"epoch": 2, "indices": hit}]
    assert summary["excluded_nonfinite"] == 1
    checkpoint = run.latest_checkpoint()
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    assert hit[0] not in checkpoint["dap"]["subset"].tolist()
    metrics = run.read_metrics()
    assert [m["samples_seen"] for m in metrics] == [240, 240, 144, 239]  # the pick after epoch 3 leaves it out
    assert all(np.isfinite(m["train_loss"]) for m in metrics)


def test_engine_excludes_nonfinite_samples_for_good_when_asked():
    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[2]),
                      exclude_nonfinite=True)
    dap.record(torch.arange(10), torch.tensor([1.0, float("nan"), 3, 4, float("inf"), 6, 7, 8, 9, 10]))
    dap.end_epoch()  # no decision after epoch 1, but the two leave the subset at once
    assert dap.last_nonfinite.tolist() == [1, 4] and dap.subset.tolist() == [0, 2, 3, 5, 6, 7, 8, 9]
    dap.record(dap.subset, dap.subset.float())
    dap.end_epoch()  # a pick: all data except the excluded
    assert dap.last_nonfinite.tolist() == [] and dap.subset.tolist() == [0, 2, 3, 5, 6, 7, 8, 9]
    restored = DropAndPick(10, dap.schedule, exclude_nonfinite=True)
    restored.load_state_dict(dap.state_dict())
    assert torch.equal(restored.excluded, dap.excluded) and torch.equal(restored.subset, dap.subset)


def test_labels_outside_the_datasets_classes_are_refused_by_the_trainer(fake_fashion, tmp_path, monkeypatch):
    from droppick.data import pipeline

    load = pipeline.dp_data.load_fashion_mnist

    def load_with_label_12(root, split):  # as if the loader's own check were bypassed
        images, labels = load(root, split)
        labels = labels.clone()
        labels[5] = 12
        return images, labels

    monkeypatch.setattr(pipeline.dp_data, "load_fashion_mnist", load_with_label_12)
    with pytest.raises(ValueError, match=r"fashion-mnist has 10 classes, so labels must lie in 0..9, .* labels \[12\]"):
        train(tiny_config(fake_fashion), tmp_path / "run")


@pytest.fixture(scope="module")
def stopped_run(fake_fashion, tmp_path_factory):
    """A run stopped after epoch 1, to resume with edited settings."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    train(tiny_config(fake_fashion), out, stop_after=1)
    return out


@pytest.mark.parametrize("key,value,message", [
    ("keep", 0.5, "checkpoint was made with keep=0.6, the run config says 0.5: restore keep in config.json"),
    ("lr", 0.5, "checkpoint was made with lr=0.05, the run config says 0.5"),
    ("model", "resnet20", "checkpoint was made with model='small_cnn', the run config says 'resnet20'"),
])
def test_resume_with_another_schedule_or_model_is_refused(stopped_run, key, value, message):
    config = RunDir(stopped_run).config_path
    saved = config.read_text()
    try:
        config.write_text(json.dumps(json.loads(saved) | {key: value}))  # edited by hand
        with pytest.raises(ValueError, match=message):
            train(None, stopped_run, resume=True)
    finally:
        config.write_text(saved)


def test_a_checkpoint_from_before_a_config_key_existed_resumes_with_its_default(fake_fashion, tmp_path):
    """Same checkpoint format, written by a release without ``decode`` and ``skip_unreadable``:
    it ran as their defaults do, so resuming it is not a change of settings."""
    from droppick.train.checkpoint import load_checkpoint, save_checkpoint

    out = tmp_path / "run"
    train(tiny_config(fake_fashion), out, stop_after=1)
    path = RunDir(out).checkpoints()[-1]
    old = load_checkpoint(path)
    for key in ("decode", "skip_unreadable"):
        del old["config"][key]
    keep = old["config"]["keep"]
    old["config"]["keep"] = 0.5  # a key both releases know still has to match
    save_checkpoint(old, path)  # with its digest, as that release wrote it
    with pytest.raises(ValueError, match=f"checkpoint was made with keep=0.5, the run config says {keep}"):
        train(None, out, resume=True)
    old["config"]["keep"] = keep
    save_checkpoint(old, path)
    assert train(None, out, resume=True)["epochs"] == tiny_config(fake_fashion).epochs


@pytest.mark.parametrize("args,message", [
    (["--keep", "0.5", "--set", "seed=3"], "remove --keep --set"),
    (["--out", "elsewhere"], "remove --out"),
])
def test_resume_refuses_settings_on_the_command_line(stopped_run, args, message, capsys):
    assert main(["train", "--resume", str(stopped_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "saved config.json" in err


def test_unknown_config_key_names_the_valid_ones(tmp_path, capsys):
    assert main(["train", "--set", "epoch=3", "--out", str(tmp_path / "run")]) == 2
    assert "unknown config keys ['epoch']; valid keys: " in capsys.readouterr().err
    config = tmp_path / "config.json"
    config.write_text(json.dumps(TrainConfig().to_dict() | {"warmpu": 2}))
    with pytest.raises(ValueError, match=r"unknown config keys \['warmpu'\]"):
        TrainConfig.load(config)


def test_library_leaves_global_state_alone(fake_fashion, tmp_path):
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)
    rngs = torch.get_rng_state(), random.getstate(), np.random.get_state()
    loader_attrs = dict(vars(torch.utils.data.DataLoader))
    threads, benchmark, dtype = torch.get_num_threads(), torch.backends.cudnn.benchmark, torch.get_default_dtype()

    dap = DropAndPick(50, DaPSchedule(epochs=2, warmup=0, interval=1, keep=0.5, active=None, reuse_at=[]),
                      policy="random", seed=1)
    order = torch.tensor(list(dap.sampler()))
    dap.record(order, order.float())
    dap.end_epoch()
    train(tiny_config(fake_fashion, epochs=2, reuse_at=[], policy="random"), tmp_path / "run")

    assert torch.equal(torch.get_rng_state(), rngs[0])
    assert random.getstate() == rngs[1]
    assert np.array_equal(np.random.get_state()[1], rngs[2][1]) and np.random.get_state()[2] == rngs[2][2]
    assert dict(vars(torch.utils.data.DataLoader)) == loader_attrs
    assert (torch.get_num_threads(), torch.backends.cudnn.benchmark, torch.get_default_dtype()) == (
        threads, benchmark, dtype)


@pytest.mark.parametrize("ends", ["returns", "raises"])
def test_train_restores_the_cudnn_benchmark_it_turns_on_for_cuda(fake_fashion, tmp_path, monkeypatch, ends):
    """cudnn.benchmark is only turned on for a CUDA device, so a CPU run cannot see it left on:
    here the device is reported as CUDA and the run itself is replaced by a probe."""
    import types

    import droppick.train.trainer as trainer
    from droppick.train.process import cudnn_tuning

    seen = []

    def probe_run(*args):
        seen.append(torch.backends.cudnn.benchmark)
        if ends == "raises":
            raise RuntimeError("the run failed")
        return {}

    monkeypatch.setattr(trainer.distributed, "setup_from_env", lambda device: types.SimpleNamespace(type="cuda"))
    monkeypatch.setattr(trainer, "_run", probe_run)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    if ends == "raises":
        with pytest.raises(RuntimeError, match="the run failed"):
            train(tiny_config(fake_fashion), tmp_path / "run")
    else:
        assert train(tiny_config(fake_fashion), tmp_path / "run") == {}
    assert seen == [True] and torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.benchmark = True  # the per-batch switch restores the caller's setting too
    with cudnn_tuning(allowed=False):
        assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.benchmark is True


def test_cli_reports_a_nan_loss_as_an_error_not_a_traceback(fake_fashion, tmp_path, monkeypatch, capsys):

    inject_nan(monkeypatch, epoch=1)
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "2", "--warmup", "1", "--reuse-at", "none",
                 "--device", "cpu", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "droppick train: error: epoch 1: non-finite loss" in capsys.readouterr().err


@pytest.mark.parametrize("pair,message", [
    ("seed=1.5", "seed must be an integer, got 1.5"),
    ("nesterov=maybe", "nesterov must be true or false, got 'maybe'"),
    ("reuse_at=5", "reuse_at must be a list of integers"),
    ("infobatch_ratio=2", r"infobatch_ratio must lie in \[0, 0.95\]"),
    ("lr_milestones=[150,400]", r"lr_milestones must be increasing epochs in 1..300, got \[150, 400\]"),
])
def test_mistyped_set_values_are_refused_before_any_data_is_read(pair, message, capsys):

    assert main(["train", "--recipe", "cifar10-resnet110-dap63", "--data-dir", "/nonexistent", "--set", pair]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
