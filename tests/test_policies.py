"""The matched-compute baselines of Table 2f and InfoBatch, on the same engine."""

import pytest
import torch

from droppick import DaPSchedule, DropAndPick
from droppick.config import TrainConfig
from droppick.selection import select_infobatch, select_static
from droppick.seeding import generator

SCHEDULE = DaPSchedule(epochs=8, warmup=2, interval=1, keep=0.5, active=None, reuse_at=[5])


def run(dap, loss_of):
    sizes = []
    while not dap.done:
        order = dap.sampler().indices()
        sizes.append(order.numel())
        for batch in order.split(7):
            dap.record(batch, torch.tensor([float(loss_of(i)) for i in batch.tolist()]))
        dap.end_epoch()
    return sizes


def test_static_keeps_one_stratified_subset_of_the_dap_compute():
    labels = torch.arange(100) % 4
    dap = DropAndPick(100, SCHEDULE, policy="static", seed=0, labels=labels)
    k = round(SCHEDULE.plan(100).compute_fraction * 100)
    first = dap.subset.clone()
    assert run(dap, lambda i: i) == [k] * 8 and torch.equal(dap.subset, first)
    assert torch.bincount(labels[first]).tolist() == [k // 4 + (1 if c < k % 4 else 0) for c in range(4)]
    assert dap.plan().subset_sizes == (k,) * 8


def test_select_static_rounds_class_quotas_by_largest_remainder():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    chosen = select_static(10, 5, generator(0, "s"), labels)
    assert torch.bincount(labels[chosen], minlength=3).tolist() == [3, 1, 1]  # quotas 2.5, 1.5, 1.0: floors 2, 1, 1, the spare place to the 0-vs-1 tie at the lower id


def test_scaled_policy_never_drops_and_config_shrinks_epochs_and_milestones():
    assert run(DropAndPick(50, SCHEDULE, policy="scaled"), lambda i: i) == [50] * 8
    cfg = TrainConfig(epochs=300, warmup=40, interval=10, keep=0.9, reuse_at=[150], lr_milestones=[150, 225],
                      policy="scaled")
    s = cfg.scaled(0.63)
    assert (s.epochs, s.warmup, s.reuse_at, s.lr_milestones) == (189, 25, [94], [94, 142])


def test_infobatch_prunes_only_below_mean_and_upweights_the_rest():
    losses = torch.tensor([0.1, 0.2, 0.3, 5.0, 6.0, 0.15, 0.25, 7.0])
    scored = torch.ones(8, dtype=torch.bool)
    kept, weights = select_infobatch(losses, scored, 0.5, generator(1, "ib"))
    below = losses < losses.mean()
    assert set(range(8)) - set(kept.tolist()) <= set(below.nonzero().squeeze(1).tolist())
    assert {3, 4, 7} <= set(kept.tolist())
    for i in range(8):
        expected = 2.0 if below[i] and i in kept.tolist() else 1.0
        assert weights[i] == expected


def test_infobatch_run_prunes_then_anneals_to_full_data():
    dap = DropAndPick(200, SCHEDULE, policy="infobatch", seed=0, infobatch_ratio=0.5, infobatch_delta=0.75)
    sizes = run(dap, lambda i: (i % 10) ** 2)  # 0,1,4,...,81: mean 28.5, six of ten below
    assert sizes[0] == 200 and all(110 < s < 170 for s in sizes[1:6]) and sizes[6:] == [200, 200]
    assert dap.batch_weights(torch.arange(3)) is None  # annealed: no weights


def test_infobatch_state_round_trip_keeps_weights():
    a = DropAndPick(60, SCHEDULE, policy="infobatch", seed=2)
    run_epochs = 3
    for _ in range(run_epochs):
        order = a.sampler().indices()
        a.record(order, order.float() % 7)
        a.end_epoch()
    b = DropAndPick(60, SCHEDULE, policy="infobatch", seed=2)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.subset, b.subset) and torch.equal(a.weights, b.weights)
    with pytest.raises(ValueError, match="policy_params"):
        DropAndPick(60, SCHEDULE, policy="infobatch", seed=2, infobatch_ratio=0.3).load_state_dict(a.state_dict())


@pytest.mark.parametrize("policy", ["scaled", "static", "infobatch"])
def test_trainer_runs_each_baseline(policy, fake_fashion, tmp_path):
    from droppick.train import train

    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=4, warmup=1, interval=1, keep=0.5, reuse_at=[3],
                      policy=policy, batch_size=32, device="cpu")
    summary = train(cfg, tmp_path / policy)
    planned = DaPSchedule(4, 1, 1, 0.5, None, [3]).plan(240).compute_fraction
    if policy == "static":
        assert summary["compute_fraction"] == pytest.approx(round(planned * 240) / 240)
    if policy == "scaled":
        assert summary["epochs"] == round(4 * planned)
        assert summary["compute_fraction"] == summary["planned_compute_fraction"] == round(4 * planned) / 4
    if policy == "infobatch":
        assert summary["compute_fraction"] < 1.0
