"""The matched-compute baselines of Table 2f and InfoBatch, on the same engine."""

import pytest
import torch

from droppick import DaPSchedule, DropAndPick
from droppick.train.config import TrainConfig
from droppick.policies import Static
from droppick.selection import select_infobatch
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
    # Uneven classes (10, 40, 30, 20 samples, shuffled), so the spare places do not fall on the lowest ids.
    labels = torch.tensor([0] * 10 + [1] * 40 + [2] * 30 + [3] * 20)[torch.randperm(100, generator=generator(5))]
    dap = DropAndPick(100, SCHEDULE, policy="static", seed=0, labels=labels)
    k = round(SCHEDULE.plan(100).compute_fraction * 100)
    first = dap.subset.clone()
    assert run(dap, lambda i: i) == [k] * 8 and torch.equal(dap.subset, first)
    # k = 69: quotas 6.9, 27.6, 20.7, 13.8; floors 6, 27, 20, 13 and the 3 spare places to fractions .9, .8, .7
    assert k == 69 and torch.bincount(labels[first]).tolist() == [7, 27, 21, 14]
    assert dap.plan().subset_sizes == (k,) * 8


@pytest.mark.parametrize("counts,k,expected", [
    ([5, 3, 2], 5, [3, 1, 1]),  # quotas 2.5, 1.5, 1.0: floors 2, 1, 1, the spare place to the 0-vs-1 tie at the lower id
    ([2, 5, 3], 5, [1, 3, 1]),  # quotas 1.0, 2.5, 1.5: the spare place to the 1-vs-2 tie, not to class 0
])
def test_select_static_rounds_class_quotas_by_largest_remainder(counts, k, expected):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    chosen = Static(target_compute=k / labels.numel(), labels=labels).first_subset(SCHEDULE, labels.numel(), seed=0)
    assert torch.bincount(labels[chosen], minlength=3).tolist() == expected


def test_scaled_policy_trains_all_data_for_fewer_epochs_and_config_shrinks_milestones():
    dap = DropAndPick(50, SCHEDULE, policy="scaled")
    epochs = round(8 * SCHEDULE.plan(50).compute_fraction)
    assert run(dap, lambda i: i) == [50] * epochs and dap.compute_fraction == epochs / 8
    cfg = TrainConfig(epochs=300, warmup=40, interval=10, keep=0.9, reuse_at=[150], lr_milestones=[150, 225],
                      policy="scaled")
    s = cfg.scaled(189)
    assert (s.epochs, s.warmup, s.reuse_at, s.lr_milestones) == (189, 25, [94], [94, 142])


def test_infobatch_prunes_only_below_mean_and_upweights_the_rest():
    losses = torch.tensor([0.1, 0.2, 0.3, 5.0, 6.0, 0.15, 0.25, 7.0])
    kept, weights = select_infobatch(losses, generator(1, "ib"), 0.5)
    below = losses < losses.mean()
    assert set(range(8)) - set(kept.tolist()) <= set(below.nonzero().squeeze(1).tolist())
    assert {3, 4, 7} <= set(kept.tolist())
    for i in range(8):
        expected = 2.0 if below[i] and i in kept.tolist() else 1.0
        assert weights[i] == expected
    # Each below-mean sample is pruned with probability `ratio`: over 400 seeds, 2000 such draws.
    for ratio in (0.2, 0.5, 0.9):
        pruned = sum(8 - select_infobatch(losses, generator(seed, "ib"), ratio)[0].numel() for seed in range(400))
        assert abs(pruned / 2000 - ratio) < 0.05, ratio


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
    assert torch.equal(a.subset, b.subset) and torch.equal(a.policy.weights, b.policy.weights)
    with pytest.raises(ValueError, match=r"made for policy_params=\{'infobatch_ratio': 0\.5, .*\} into one with "
                                         r"policy_params=\{'infobatch_ratio': 0\.3, "):
        DropAndPick(60, SCHEDULE, policy="infobatch", seed=2, infobatch_ratio=0.3).load_state_dict(a.state_dict())


@pytest.mark.parametrize("policy", ["dap", "random", "full", "scaled", "static", "infobatch", "rs2", "epsilon", "ema"])
def test_trainer_records_what_each_policy_did(policy, fake_fashion, tmp_path):
    from droppick.train.rundir import RunDir
    from droppick.train.trainer import train

    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=6, warmup=1, interval=1, keep=0.5, reuse_at=[3, 6],
                      policy=policy, batch_size=32, device="cpu",
                      infobatch_delta=0.8 if policy == "infobatch" else TrainConfig.infobatch_delta)
    summary = train(cfg, tmp_path / policy)
    rows = RunDir(tmp_path / policy).read_metrics()
    n = summary["num_train_samples"]
    for row, after in zip(rows, rows[1:]):  # the event of a row is what changed the next row's subset
        changed = row["subset_sha256"] != after["subset_sha256"]
        assert changed == (row["event"] is not None), (policy, row["epoch"], row["event"])
        if row["event"] == "drop":
            assert after["subset_size"] < row["subset_size"]
        if row["event"] == "pick":
            assert after["subset_size"] == n > row["subset_size"]
    assert rows[-1]["event"] is None  # nothing is decided after the last epoch
    assert rows[-1]["compute_fraction"] == summary["compute_fraction"]
    assert summary["compute_fraction"] == sum(r["samples_seen"] for r in rows) / (6 * n)
    events = {r["event"] for r in rows} - {None}
    planned = DaPSchedule(6, 1, 1, 0.5, None, [3, 6]).plan(n)
    expected_events = {"dap": {"drop", "pick"}, "random": {"drop", "pick"}, "full": set(), "scaled": set(),
                       "static": set(), "infobatch": {"prune", "pick"}, "rs2": {"resample"}, "epsilon": {"drop", "pick"},
                       "ema": {"drop", "pick"}}[policy]
    assert events == expected_events
    if policy in ("dap", "random", "epsilon", "ema"):
        assert [r["subset_size"] for r in rows] == list(planned.subset_sizes)
    if policy in ("static", "rs2"):
        assert summary["compute_fraction"] == pytest.approx(round(planned.compute_fraction * n) / n)
    if policy == "scaled":
        assert summary["epochs"] == len(rows) == round(6 * planned.compute_fraction)
        assert summary["compute_fraction"] == summary["planned_compute_fraction"] == len(rows) / 6
    if policy == "infobatch":
        assert summary["compute_fraction"] < 1.0


# -- a user's own selection rule ------------------------------------------------------------------

class KeepEasiest:
    def select(self, subset, losses, k, generator):
        return subset[torch.argsort(losses[subset], stable=True)[:k]]


def test_custom_rule_keeps_the_lowest_losses_through_three_drops_and_a_pick():
    schedule = DaPSchedule(epochs=7, warmup=1, interval=1, keep=0.6, reuse_at=[5])
    dap = DropAndPick(50, schedule, policy=KeepEasiest(), seed=0)

    def loss_of(i):
        return float((i * 37 + dap.epoch * 11) % 50)  # a different ranking every epoch, no ties

    events = []
    while not dap.done:
        before = dap.subset.tolist()
        order = dap.sampler().indices()
        for batch in order.split(8):
            dap.record(batch, torch.tensor([loss_of(i) for i in batch.tolist()]))
        epoch_losses = {i: loss_of(i) for i in before}
        event = dap.end_epoch()
        events.append(event)
        if event == "drop":
            k = len(before) * 6 // 10
            assert dap.subset.tolist() == sorted(sorted(before, key=lambda i: (epoch_losses[i], i))[:k])
        elif event == "pick":
            assert dap.subset.tolist() == list(range(50))
        else:
            assert dap.subset.tolist() == before
    assert events == [None, "drop", "drop", "drop", "pick", "drop", None]
    assert dap.samples_per_epoch == list(dap.plan().subset_sizes) == [50, 50, 30, 18, 10, 50, 30]
    assert dap.policy.name == "KeepEasiest"


class Returns:
    def __init__(self, answer):
        self.answer = answer

    def select(self, subset, losses, k, generator):
        return self.answer(subset, k)


@pytest.mark.parametrize("answer,message", [
    (lambda subset, k: subset[: k - 1], r"policy Returns: select\(\) returned 4 indices at the drop after epoch 1; "
                                        r"the schedule keeps k=5"),
    (lambda subset, k: torch.cat([subset[: k - 1], subset[:1]]), r"policy Returns: select\(\) returned duplicate "
                                                                 r"indices \[0\]"),
    (lambda subset, k: torch.arange(k) + 8, r"policy Returns: select\(\) returned indices outside 0..9"),
    (lambda subset, k: torch.rand(k), r"policy Returns: select\(\) must return a 1-D tensor of sample indices"),
])
def test_a_rule_returning_a_bad_selection_is_refused_by_name(answer, message):
    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), policy=Returns(answer))
    dap.record(torch.arange(10), torch.arange(10.0))
    with pytest.raises(ValueError, match=message):
        dap.end_epoch()


def test_a_rule_returning_samples_outside_the_subset_is_refused():
    def others(subset, k):  # the first drop keeps 0..4, the second answers with non-members
        return subset[:k] if subset.numel() == 10 else torch.tensor([i for i in range(10) if i not in subset][:k])

    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), policy=Returns(others))
    dap.record(torch.arange(10), torch.arange(10.0))
    assert dap.end_epoch() == "drop" and dap.subset.tolist() == [0, 1, 2, 3, 4]
    dap.record(torch.arange(5), torch.arange(5.0))
    with pytest.raises(ValueError, match=r"returned samples \[5, 6\] that are not in the current subset"):
        dap.end_epoch()


def test_an_object_without_select_is_refused():
    with pytest.raises(ValueError, match=r"a selection rule needs a select\(subset, losses, k, generator\) method; "
                                         "int has none"):
        DropAndPick(10, SCHEDULE, policy=42)
