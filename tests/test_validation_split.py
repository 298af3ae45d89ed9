"""--val-samples: a seeded, class-stratified validation split held out of the training data."""

import dataclasses
import json

import pytest
import torch

from droppick.data.validation import validation_indices
from droppick.train.config import TrainConfig
from droppick.train.rundir import RunDir


def test_held_out_indices_are_stratified_disjoint_seeded_and_cover_the_split():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = validation_indices(labels, 10, seed=3)
    assert torch.bincount(labels[held], minlength=3).tolist() == [5, 3, 2]  # every class's share
    assert sorted(kept.tolist() + held.tolist()) == list(range(100))  # disjoint, nothing lost
    assert torch.equal(validation_indices(labels, 10, seed=3)[1], held)
    assert not torch.equal(validation_indices(labels, 10, seed=4)[1], held)
    with pytest.raises(ValueError, match=r"val_samples must lie in 1..99"):
        validation_indices(labels, 100, seed=0)


def test_a_run_with_val_samples_trains_on_the_rest_and_reports_val_top1(fake_fashion, tmp_path):
    from droppick.report.compare import dataset_size
    from droppick.train.trainer import train

    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=3, warmup=1, interval=1, keep=0.5, reuse_at=[],
                      batch_size=64, device="cpu", val_samples=40)
    summary = train(cfg, tmp_path / "run")
    assert summary["num_train_samples"] == 200 == dataset_size(cfg) and summary["num_val_samples"] == 40
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [r["subset_size"] for r in rows] == [200, 200, 100]
    assert all(0 <= r["val_top1"] <= 100 and r["val_top1"] == round(r["val_top1"] * 40 / 100) * 100 / 40
               for r in rows)  # a share of the 40 held-out images
    assert summary["final_val_top1"] == rows[-1]["val_top1"] and "test_top1" in rows[-1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["val_samples"] == 40
    with pytest.raises(ValueError, match="val_samples must lie in 1..239"):
        train(dataclasses.replace(cfg, val_samples=240), tmp_path / "bad")
