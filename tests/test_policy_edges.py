"""The policies' and selection rules' edges, found untested by the mutation run (bench/mutation.md):
bounds of every setting, what a rule's answer may be, seeding, and the InfoBatch calibration."""

import re

import pytest
import torch

from droppick import DaPSchedule, DropAndPick
from droppick.policies import InfoBatch, Scaled, Static
from droppick.sampler import DaPSampler, shard_order
from droppick.selection import ratio_for_budget, select_infobatch, stratified_choice, well_learned
from droppick.seeding import generator

from test_policies import Returns  # a rule answering whatever it is given

SCHEDULE = DaPSchedule(epochs=8, warmup=2, interval=1, keep=0.5, active=None, reuse_at=[5])


def run(dap, loss_of):
    while not dap.done:
        order = dap.sampler().indices()
        dap.record(order, torch.tensor([float(loss_of(i)) for i in order.tolist()]))
        dap.end_epoch()
    return dap


def first_drop(answer, n=10):
    dap = DropAndPick(n, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), policy=Returns(answer))
    dap.record(torch.arange(n), torch.arange(float(n)))
    return dap


@pytest.mark.parametrize("answer,message", [
    (lambda s, k: torch.tensor([0, 0, 1, 2, 3]), "select() returned duplicate indices [0]; each kept sample must "
                                                 "appear once"),  # sorted, yet not strictly
    (lambda s, k: torch.tensor([3, 1, 2, 2, 0]), "select() returned duplicate indices [2]; each kept sample must "
                                                 "appear once"),
    (lambda s, k: torch.tensor([-1, 1, 2, 3, 4]), "select() returned indices outside 0..9 (-1..4)"),
    (lambda s, k: torch.tensor([0, 1, 2, 3, 10]), "select() returned indices outside 0..9 (0..10)"),
])
def test_a_rules_answer_is_checked_whatever_its_order(answer, message):
    with pytest.raises(ValueError, match=re.escape(f"policy Returns: {message}")):
        first_drop(answer).end_epoch()


def test_error_lists_stop_at_ten_samples():
    with pytest.raises(ValueError, match=re.escape(f"duplicate indices {list(range(10))}; each")):
        first_drop(lambda s, k: torch.cat([s[:12], s[:12]]), n=48).end_epoch()

    def others(subset, k):  # the first drop keeps 0..23, the second answers with 12 non-members
        return subset[:k] if subset.numel() == 48 else torch.arange(24, 24 + k)

    dap = first_drop(others, n=48)
    dap.end_epoch()
    dap.record(dap.subset, torch.ones(24))
    with pytest.raises(ValueError, match=re.escape(f"returned samples {list(range(24, 34))} that are not in")):
        dap.end_epoch()


def test_an_unsorted_or_int32_answer_becomes_a_sorted_int64_subset():
    dap = first_drop(lambda s, k: torch.tensor([0, 3, 2, 1, 4], dtype=torch.int32))
    assert dap.end_epoch() == "drop"
    assert dap.subset.dtype == torch.int64 and dap.subset.tolist() == [0, 1, 2, 3, 4]


def test_scheduled_passes_a_stateful_rules_state_through():
    class Counting:
        def __init__(self):
            self.calls = 0

        def select(self, subset, losses, k, generator):
            self.calls += 1
            return subset[:k]

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), policy=Counting())
    dap.record(torch.arange(10), torch.arange(10.0))
    dap.end_epoch()
    state = dap.state_dict()
    assert state["policy_state"] == {"calls": 1}
    restored = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), policy=Counting())
    restored.load_state_dict(state)
    assert restored.policy.rule.calls == 1


def test_a_drop_without_losses_names_the_call_to_make():
    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5))
    with pytest.raises(RuntimeError, match=re.escape("epoch 1 is a drop epoch but no loss was recorded for the "
                                                     "subset: call dap.record(indices, per_sample_losses) for every "
                                                     "training batch.")):
        dap.end_epoch()


def test_random_drops_draw_from_seed_and_epoch():
    def kept(seed):
        dap = DropAndPick(40, DaPSchedule(epochs=4, warmup=0, interval=1, keep=0.5), policy="random", seed=seed)
        drops = []
        for _ in range(2):
            dap.record(dap.subset, torch.ones(dap.subset.numel()))
            dap.end_epoch()
            drops.append(dap.subset.tolist())
        return drops

    a, b, c = kept(0), kept(0), kept(1)
    assert a == b and a[0] != c[0]
    # after two drops of 40 -> 20 -> 10, the second draw is not the first draw's first half
    assert a[1] != sorted(a[0])[:10]
    assert kept(0)[0] == sorted(keep_random_draw(0, 1, 40, 20))


def keep_random_draw(seed, epoch, n, k):
    """KeepRandom's documented draw for the drop after ``epoch``: k of the subset, from generator(seed, epoch, "select")."""
    from droppick.policies import KeepRandom

    return KeepRandom().select(torch.arange(n), None, k, generator(seed, epoch, "select")).tolist()


def test_sampler_and_shard_refuse_a_rank_outside_the_world():
    with pytest.raises(ValueError, match=r"^rank must lie in 0\.\.1, got 2$"):
        shard_order(torch.arange(5), 0, 1, 2, 2)
    with pytest.raises(ValueError, match=r"^rank must lie in 0\.\.2, got 3$"):
        DaPSampler(DropAndPick(5, SCHEDULE), rank=3, world_size=3)


# -- selection ----------------------------------------------------------------------------------

def test_stratified_choice_bounds_and_its_own_generator():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    assert stratified_choice(labels, 1, generator(0)).numel() == 1
    assert stratified_choice(labels, 8, generator(0)).tolist() == list(range(8))
    for k in (0, 9):
        with pytest.raises(ValueError, match=rf"^k must lie in 1\.\.8, got {k}$"):
            stratified_choice(labels, k, generator(0))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    draws = [stratified_choice(labels, 4, generator(s)).tolist() for s in (3, 3, 4, 5, 6)]
    assert torch.equal(torch.get_rng_state(), before)  # the global RNG is untouched
    assert draws[0] == draws[1] and len({tuple(d) for d in draws}) > 1


def test_static_draws_from_its_seed_and_checks_its_labels():
    subsets = [Static(target_compute=0.3).first_subset(SCHEDULE, 50, seed=s).tolist() for s in (0, 0, 1)]
    assert subsets[0] == subsets[1] != subsets[2] and len(subsets[0]) == 15
    labels = torch.arange(50) % 2
    stratified = [Static(0.3, labels).first_subset(SCHEDULE, 50, seed=s).tolist() for s in (0, 0, 1)]
    assert stratified[0] == stratified[1] != stratified[2]
    with pytest.raises(ValueError, match=r"^labels has 50 entries for 49 samples$"):
        Static(0.3, labels).first_subset(SCHEDULE, 49, seed=0)
    plan = Static(target_compute=0.001).plan(SCHEDULE, 50)  # rounds to 0: one sample at least
    assert plan.subset_sizes == (1,) * 8 and plan.events == (None,) * 8 and plan.num_samples == 50
    assert Static(target_compute=0.3).params() == {"target_compute": 0.3}


def test_scaled_and_the_target_compute_bounds():
    plan = Scaled(target_compute=0.5).plan(SCHEDULE, 10)
    assert plan.subset_sizes == (10,) * 4 and plan.events == (None,) * 4 and plan.compute_fraction == 0.5
    assert Scaled(target_compute=0.01).plan(SCHEDULE, 10).epochs == 1  # at least one epoch
    assert Scaled(target_compute=0.5).params() == {"target_compute": 0.5}
    assert Scaled(target_compute=1.0).plan(SCHEDULE, 10).epochs == 8
    for bad in (0.0, 1.5, 2.0):
        with pytest.raises(ValueError, match=rf"^target_compute must lie in \(0, 1\], got {bad}$"):
            Scaled(target_compute=bad)


# -- InfoBatch ------------------------------------------------------------------------------------

def test_infobatch_settings_and_their_bounds():
    assert InfoBatch().params() == {"infobatch_ratio": 0.5, "infobatch_delta": 0.875, "target_compute": None}
    assert InfoBatch(0.0, 1.0, 0.7).params() == {"infobatch_ratio": 0.0, "infobatch_delta": 1.0, "target_compute": 0.7}
    fresh = InfoBatch()
    assert fresh.batch_weights(torch.arange(3)) is None and fresh.samples_seen == 0 and fresh.ratios == []
    for ratio, delta in ((1.0, 0.5), (-0.1, 0.5), (1.5, 0.5), (0.5, 0.0), (0.5, 1.5), (0.5, 2.0)):
        with pytest.raises(ValueError, match=re.escape("infobatch_ratio must lie in [0, 1) and infobatch_delta in "
                                                       f"(0, 1]; got {ratio} and {delta}")):
            InfoBatch(ratio, delta)
    with pytest.raises(ValueError, match="target_compute must lie in"):
        InfoBatch(target_compute=1.5)


def test_infobatch_calibrates_its_ratio_to_the_target_compute():
    dap = DropAndPick(100, SCHEDULE, policy="infobatch", seed=0, target_compute=0.8, infobatch_delta=0.75)
    events = []
    while not dap.done:
        order = dap.sampler().indices()
        dap.record(order, (order % 10).float())  # 0..9: mean 4.5, half of the samples below it
        events.append(dap.end_epoch())
    policy = dap.policy
    # after epoch 1: 100 trained, 540 of the 640 budget left; epochs 7-8 train all data (delta 0.75 of 8),
    # so each of the 5 pruned epochs 2-6 may train (540 - 200) / 5 = 68: prune 32 of the 50 below the mean
    assert policy.ratios[0] == pytest.approx(0.64) and len(policy.ratios) == 5
    assert events == ["prune"] * 5 + ["pick", None, None]
    # it counts the epochs it decided after: all but the last
    assert policy.samples_seen == sum(dap.samples_per_epoch[:-1]) and dap.samples_per_epoch[-2:] == [100, 100]
    assert dap.compute_fraction == pytest.approx(0.8, abs=0.02)
    assert policy.weights is None and policy.last_losses.tolist() == [float(i % 10) for i in range(100)]


def test_infobatch_prunes_a_fresh_draw_each_epoch_and_seed():
    def pruned(seed):
        dap = DropAndPick(60, SCHEDULE, policy="infobatch", seed=seed)
        kept = []
        for _ in range(3):
            order = dap.sampler().indices()
            dap.record(order, (order % 6).float())
            dap.end_epoch()
            kept.append(dap.subset.tolist())
        return kept

    a = pruned(0)
    assert a == pruned(0) and a[0] != pruned(1)[0]
    assert a[1] != a[2]  # same losses, another epoch: another draw


def test_infobatch_state_round_trip_is_complete():
    a = run(DropAndPick(30, SCHEDULE, policy="infobatch", seed=1), lambda i: i % 4)
    state = a.policy.state_dict()
    assert state["weights"] is None and state["last_losses"] is not a.policy.last_losses
    b = InfoBatch()
    b.load_state_dict(state)
    assert torch.equal(b.last_losses, a.policy.last_losses) and b.weights is None
    assert (b.samples_seen, b.ratios) == (a.policy.samples_seen, a.policy.ratios) and len(b.ratios) == 6
    mid = DropAndPick(30, SCHEDULE, policy="infobatch", seed=1)
    order = mid.sampler().indices()
    mid.record(order, (order % 4).float())
    mid.end_epoch()
    c = InfoBatch()
    c.load_state_dict(mid.policy.state_dict())
    assert torch.equal(c.weights, mid.policy.weights) and c.weights is not mid.policy.weights
    empty = InfoBatch()
    empty.load_state_dict(InfoBatch().state_dict())
    assert empty.last_losses is None and empty.weights is None


def test_select_infobatch_bounds_and_its_own_generator():
    scores = torch.tensor([0.1, 0.2, 0.3, 5.0, 6.0, 0.15, 0.25, 7.0])
    kept, weights = select_infobatch(scores, generator(0), 0.0)
    assert kept.tolist() == list(range(8)) and weights.tolist() == [1.0] * 8
    for ratio in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=re.escape(f"InfoBatch ratio must lie in [0, 1), got {ratio}")):
            select_infobatch(scores, generator(0), ratio)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    draws = [select_infobatch(scores, generator(s, "ib"), 0.5)[0].tolist() for s in (2, 2, 3, 4, 5)]
    assert torch.equal(torch.get_rng_state(), before) and draws[0] == draws[1] and len(set(map(tuple, draws))) > 1


def test_well_learned_is_strictly_below_the_mean_of_the_scored():
    assert well_learned(torch.tensor([1.0, 2.0, 3.0, float("nan")])).tolist() == [True, False, False, False]
    assert well_learned(torch.full((3,), float("nan"))).tolist() == [False] * 3


@pytest.mark.parametrize("args,ratio", [
    ((260, 2, 1, 100, 50, 0.95), 0.4),  # per pruned epoch (260 - 100) / 2 = 80 of 100: prune 20 of 50
    ((180, 1, 1, 100, 50, 0.95), 0.4),
    ((199.5, 1, 1, 100, 1, 0.95), 0.5),  # one well-learned sample
    ((1000, 2, 1, 100, 50, 0.95), 0.0),  # budget for more than all data: prune nothing
    ((110, 2, 1, 100, 50, 0.95), 0.95),  # too little budget: capped
    ((260, 0, 1, 100, 50, 0.95), 0.0),  # no pruned epoch left
    ((260, 2, 1, 100, 0, 0.95), 0.0),  # nothing well learned
])
def test_ratio_for_budget(args, ratio):
    assert ratio_for_budget(*args) == pytest.approx(ratio)


def test_infobatch_scores_a_pruned_sample_by_its_last_loss():
    dap = DropAndPick(40, SCHEDULE, policy="infobatch", seed=0)
    for epoch in (1, 2):
        order = dap.sampler().indices()
        dap.record(order, (order % 8).float() + epoch * 10)  # epoch 1: 10..17, epoch 2: 20..27
        trained = set(order.tolist())
        dap.end_epoch()
    pruned = [i for i in range(40) if i not in trained]
    assert pruned  # epoch 2 trained a pruned subset; those samples keep their epoch-1 loss
    assert dap.policy.last_losses[pruned].tolist() == [float(i % 8 + 10) for i in pruned]


def test_build_policy_passes_each_baseline_its_settings():
    from droppick.policies import build_policy

    assert build_policy("infobatch").params() == InfoBatch().params()
    assert DropAndPick(10, SCHEDULE, policy="scaled", target_compute=0.5).plan().epochs == 4
    assert DropAndPick(10, SCHEDULE, policy="static", target_compute=0.3).plan().subset_sizes == (3,) * 8
    firsts = [DropAndPick(50, SCHEDULE, policy="static", seed=s).subset.tolist() for s in (0, 0, 1)]
    assert firsts[0] == firsts[1] != firsts[2]  # the engine's seed reaches the static draw


def test_an_integer_setting_names_the_type_it_got():
    with pytest.raises(ValueError, match=r"^epochs must be an integer, got 3\.0 \(float\)$"):
        DaPSchedule(epochs=3.0, warmup=1, interval=1, keep=0.5)
