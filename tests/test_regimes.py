"""Data less kind than a clean balanced set: a seeded long tail of the training split, balanced
accuracy beside top-1, and the subset's class mix in every epoch's metrics row."""

import json

import pytest
import torch

from droppick.cli.main import main
from droppick.data.datasets import long_tail, per_class_subsample
from droppick.train.config import TrainConfig


def test_a_long_tail_keeps_an_exponential_profile_from_the_smallest_class_count():
    labels = torch.arange(10).repeat_interleave(torch.tensor([2000] * 9 + [1990]))
    keep = long_tail(labels, 10.0, seed=3)
    counts = torch.bincount(labels[keep], minlength=10)
    expected = sorted(max(1, round(1990 * 10 ** (-r / 9))) for r in range(10))
    assert sorted(counts.tolist()) == expected and max(expected) == 1990 and min(expected) == 199
    assert torch.equal(keep, keep.sort().values) and keep.unique().numel() == keep.numel()
    assert torch.equal(keep, long_tail(labels, 10.0, seed=3))  # seeded
    other = torch.bincount(labels[long_tail(labels, 10.0, seed=4)], minlength=10)
    assert not torch.equal(counts, other)  # another seed ranks the classes differently
    assert torch.equal(torch.bincount(labels[long_tail(labels, 1.0, seed=0)]), torch.full((10,), 1990))


@pytest.mark.parametrize("ratio", [0.5, float("nan")])
def test_a_long_tail_below_one_is_refused(ratio):
    with pytest.raises(ValueError, match="imbalance must be >= 1"):
        long_tail(torch.arange(4).repeat(5), ratio, seed=0)
    with pytest.raises(ValueError, match="imbalance must be a number >= 1"):
        TrainConfig(imbalance=ratio)


def test_per_class_subsample_still_draws_what_it_drew():
    """The shared helper under per_class_subsample and long_tail did not change what --per-class keeps:
    a digest of the indices drawn before the helper existed."""
    labels = torch.arange(10).repeat(300)
    keep = per_class_subsample(labels, 17, seed=5)
    assert torch.bincount(labels[keep]).tolist() == [17] * 10
    assert keep[:8].tolist() == [2, 4, 23, 27, 93, 137, 144, 192]  # what the code before the helper drew


def test_a_run_on_a_long_tail_reports_balanced_top1_and_the_subset_class_mix(fake_fashion, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "3", "--warmup", "1", "--interval", "1",
                 "--keep", "0.5", "--reuse-at", "none", "--batch-size", "32", "--imbalance", "4", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    first = rows[0]["subset_class_counts"]
    assert len(first) == 10 and sum(first) == summary["num_train_samples"] == rows[0]["subset_size"]
    assert max(first) == 24 and min(first) == 6  # 240 images, 24 per class; a tail of 4x: 24 down to 6
    assert [sum(r["subset_class_counts"]) for r in rows] == [r["subset_size"] for r in rows]
    assert rows[2]["subset_size"] < rows[1]["subset_size"]  # the drop after epoch 2 shows in the mix too
    assert summary["final_test_balanced_top1"] == rows[-1]["test_balanced_top1"]
    # the test split is untouched and balanced (8 images of each class): the class mean is top-1 itself
    assert summary["num_test_samples"] == 80
    assert summary["final_test_balanced_top1"] == pytest.approx(summary["final_test_top1"])
    assert TrainConfig.load(out / "config.json").imbalance == 4.0
