"""SeTa as droppick writes it: the sliding window, the one-dimensional k-means, a hand-worked toy run,
its state, its calibration to a budget and its run from the command line."""

import json

import pytest
import torch

from droppick import DaPSchedule, DropAndPick
from droppick.cli.main import main
from droppick.policies.seta import SeTa, kmeans_1d, window_of


def test_the_window_slides_one_cluster_harder_each_step_and_wraps():
    # 5 clusters, window 0.6: 3 clusters, starts 0, 1, 2, 0, ... after the first step, which trains all
    assert [list(window_of(s, 5, 0.6)) for s in range(5)] == [[0, 1, 2, 3, 4], [1, 2, 3], [2, 3, 4], [0, 1, 2],
                                                              [1, 2, 3]]
    assert list(window_of(7, 5, 1.0)) == [0, 1, 2, 3, 4]  # a full window never slides
    assert list(window_of(3, 4, 0.1)) == [3]  # at least one cluster


def test_kmeans_finds_well_separated_clusters_ordered_easy_to_hard():
    values = torch.tensor([9.0, 0.1, 5.0, 0.2, 9.1, 5.2, 0.0, 4.9, 8.9])
    assert kmeans_1d(values, 3).tolist() == [2, 0, 1, 0, 2, 1, 0, 1, 2]
    assert kmeans_1d(torch.ones(4), 2).tolist() == [0, 0, 0, 0]  # one value: one cluster, the other empty


def toy_engine(**settings):
    return DropAndPick(12, DaPSchedule(epochs=5, warmup=1, interval=1, keep=1.0), policy=SeTa(**settings), seed=3)


def test_a_toy_run_keeps_what_the_rule_says_by_hand():
    """ratio 0 (no random step), 3 clusters of 4 samples each by loss, window 2/3 (2 clusters): epoch 1
    trains everything, then clusters [1, 2], [0, 1], [1, 2]; past delta x E = 4 epochs, the random step alone."""
    dap = toy_engine(ratio=0.0, groups=3, window=0.6, delta=0.8)
    losses = torch.tensor([0.1, 5.0, 9.0, 0.2, 5.1, 9.1, 0.3, 5.2, 9.2, 0.4, 5.3, 9.3])  # easy: 0,3,6,9; hard: 2,5,8,11
    easy, middle, hard = [0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]
    expected = [sorted(middle + hard), sorted(easy + middle), sorted(middle + hard), list(range(12))]
    assert dap.subset.tolist() == list(range(12))
    for want in expected:
        order = dap.sampler().indices()
        dap.record(order, losses[order])
        assert dap.end_epoch() == "prune"
        assert dap.subset.tolist() == want
    assert dap.policy.step == 3 and dap.done is False


def test_its_state_resumes_exactly_and_a_budget_calibrates_its_ratio():
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(12, generator=gen) * 5
    reference, resumed = toy_engine(groups=3, window=0.7), None
    for epoch in range(1, 5):
        order = reference.sampler().indices()
        reference.record(order, losses[order] / epoch)
        reference.end_epoch()
        if epoch == 2:
            resumed = toy_engine(groups=3, window=0.7)
            resumed.load_state_dict(reference.state_dict())
        elif resumed is not None:
            order = resumed.sampler().indices()
            resumed.record(order, losses[order] / epoch)
            resumed.end_epoch()
            assert torch.equal(resumed.subset, reference.subset)
    budget = DropAndPick(400, DaPSchedule(epochs=10, warmup=1, interval=1, keep=1.0),
                         policy=SeTa(groups=5, window=0.6, target_compute=0.4), seed=1)
    scores = torch.rand(400, generator=gen)
    while not budget.done:
        order = budget.sampler().indices()
        budget.record(order, scores[order])
        budget.end_epoch()
    assert abs(budget.compute_fraction - 0.4) < 0.03  # recalibrated every epoch; the window's share is estimated
    with pytest.raises(ValueError, match="seta groups must be an integer >= 1"):
        SeTa(groups=0)


def test_seta_trains_from_the_command_line_at_a_target(fake_fashion, tmp_path):
    out = tmp_path / "seta"
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "6", "--warmup", "1", "--interval", "1",
                 "--reuse-at", "none", "--batch-size", "32", "--policy", "seta", "--seta-groups", "3",
                 "--target-compute", "0.5", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "seta" and abs(summary["compute_fraction"] - 0.5) < 0.1
