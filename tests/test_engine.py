"""Selection rules, the engine's state machine, the sampler, and state round trips."""

import math

import pytest
import torch

from droppick import DaPSchedule, DropAndPick, NonFiniteLossError
from droppick.sampler import shard_order
from droppick.policies import KeepRandom
from droppick.selection import select_hardest
from droppick.seeding import generator


def small_schedule(**kw):
    return DaPSchedule(**dict(dict(epochs=6, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[4]), **kw))


def run_epoch(dap, loss_of):
    """Record ``loss_of(index)`` for every sample the sampler yields, in batches of 3."""
    order = list(dap.sampler())
    for start in range(0, len(order), 3):
        idx = torch.tensor(order[start:start + 3])
        dap.record(idx, torch.tensor([float(loss_of(i)) for i in idx.tolist()]))
    return dap.end_epoch()


# -- selection --------------------------------------------------------------------------------

def test_select_hardest_keeps_exactly_the_highest_losses():
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(1000, generator=gen)
    subset = torch.arange(0, 1000, 3)
    kept = select_hardest(subset, losses, 100)
    expected = subset[losses[subset].argsort(descending=True)[:100]].sort().values
    assert torch.equal(kept, expected)


def test_select_hardest_breaks_ties_by_lower_index():
    losses = torch.tensor([1.0, 5.0, 3.0, 3.0, 3.0, 0.5, 3.0])
    subset = torch.tensor([0, 1, 2, 3, 4, 6])
    assert select_hardest(subset, losses, 3).tolist() == [1, 2, 3]
    assert select_hardest(subset, losses, 1).tolist() == [1]
    assert select_hardest(subset, losses, 6).tolist() == subset.tolist()


def test_keep_random_keeps_count_and_is_seeded():
    subset = torch.arange(10, 110)
    a = KeepRandom().select(subset, None, 40, generator(0, 1, "x"))
    b = KeepRandom().select(subset, None, 40, generator(0, 1, "x"))
    c = KeepRandom().select(subset, None, 40, generator(1, 1, "x"))
    assert a.numel() == 40 and torch.equal(a, b) and not torch.equal(a, c)
    assert bool((a[1:] > a[:-1]).all()) and set(a.tolist()) <= set(subset.tolist())


@pytest.mark.parametrize("k", [0, 11])
def test_select_refuses_impossible_k(k):
    with pytest.raises(ValueError, match="k must lie in 1..10"):
        select_hardest(torch.arange(10), torch.zeros(10), k)


@pytest.mark.parametrize("kind", ["rand", "ties", "sorted", "inf"])
@pytest.mark.parametrize("everything", [True, False])
def test_select_hardest_equals_a_full_stable_sort(kind, everything):
    # Both paths (all data, and a subset gathered from it) against a reference sort: highest loss
    # first, ties to the lower index.
    n = 1 << 16
    gen = torch.Generator().manual_seed(0)
    values = {"rand": torch.rand(n, generator=gen), "ties": torch.randint(0, 5, (n,), generator=gen).float(),
              "sorted": torch.arange(n, dtype=torch.float32)}.get(kind, torch.rand(n, generator=gen))
    if kind == "inf":
        values[::5], values[1::7] = float("inf"), float("-inf")
    subset = torch.arange(n) if everything else (torch.rand(n, generator=gen) < 0.8).nonzero().squeeze(1)
    for k in (1, subset.numel() // 3, subset.numel() - 1):
        order = torch.argsort(-values[subset], stable=True)  # stable: equal losses keep index order
        expected = subset[order[:k]].sort().values
        assert torch.equal(select_hardest(subset, values, k), expected)


# -- engine -----------------------------------------------------------------------------------

def test_dap_follows_the_plan_and_keeps_hardest():
    n = 40
    dap = DropAndPick(n, small_schedule(), policy="dap", seed=0)
    sizes = []
    while not dap.done:
        sizes.append(dap.subset.numel())
        subset_before = dap.subset.clone()
        event = run_epoch(dap, loss_of=lambda i: (i * 7919) % 101)  # fixed, distinct-ish losses
        if event == "drop":
            by_loss = sorted(subset_before.tolist(), key=lambda i: (-((i * 7919) % 101), i))
            assert dap.subset.tolist() == sorted(by_loss[: len(by_loss) // 2])
    plan = dap.plan()
    assert sizes == list(plan.subset_sizes)
    assert math.isclose(dap.compute_fraction, plan.compute_fraction)
    assert dap.samples_per_epoch == sizes


def test_random_policy_keeps_count_and_differs_from_dap():
    results = {}
    for policy in ("dap", "random"):
        dap = DropAndPick(60, small_schedule(), policy=policy, seed=3)
        run_epoch(dap, lambda i: i)  # warm-up epoch
        run_epoch(dap, lambda i: i)  # drop after epoch 2
        results[policy] = dap.subset.clone()
    assert results["dap"].tolist() == list(range(30, 60))
    assert results["random"].numel() == 30 and not torch.equal(results["random"], results["dap"])


def test_full_policy_never_drops():
    dap = DropAndPick(20, small_schedule(), policy="full")
    while not dap.done:
        run_epoch(dap, lambda i: i)
    assert dap.samples_per_epoch == [20] * 6 and dap.compute_fraction == 1.0
    assert dap.plan().events == (None,) * 6  # nothing to pick up at the schedule's pick


def test_unseen_subset_members_are_kept_at_a_drop():
    dap = DropAndPick(10, small_schedule(warmup=0), seed=0)
    dap.record(torch.arange(0, 8), torch.arange(0, 8, dtype=torch.float32))  # 8 and 9 never seen (drop_last)
    dap.end_epoch()
    assert dap.subset.tolist() == [5, 6, 7, 8, 9]
    assert dap.samples_per_epoch == [8]  # measured: only what was trained on


def test_record_refuses_reduced_loss_with_the_fix():
    dap = DropAndPick(10, small_schedule())
    with pytest.raises(ValueError, match="reduction='none'"):
        dap.record(torch.arange(4), torch.tensor(1.0))


def test_record_refuses_samples_outside_subset_and_range():
    dap = DropAndPick(10, small_schedule(warmup=0))
    run_epoch(dap, lambda i: i)
    with pytest.raises(ValueError, match="not in the current subset"):
        dap.record(torch.tensor([0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="must lie in 0..9"):
        dap.record(torch.tensor([10]), torch.tensor([1.0]))


def test_recorded_losses_are_copies_and_the_last_record_of_a_sample_wins():
    # record() defers the host copy to flush(); what it keeps must not change with the caller's tensors.
    dap = DropAndPick(6, small_schedule(warmup=0), policy="dap", seed=0)
    idx, loss = torch.tensor([0, 1, 2]), torch.tensor([5.0, 1.0, 4.0])
    dap.record(idx, loss)
    dap.record(torch.tensor([3, 4, 5, 2]), torch.tensor([0.5, 3.0, 2.0, 0.0]))  # sample 2 again, now easiest
    loss.fill_(-1.0)
    idx.fill_(5)
    assert dap.losses.tolist() == [5.0, 1.0, 0.0, 0.5, 3.0, 2.0]  # reading losses flushes
    dap.record(torch.tensor([1]), torch.tensor([9.0]))
    assert dap.state_dict()["losses"].tolist() == [5.0, 9.0, 0.0, 0.5, 3.0, 2.0]  # so does state_dict
    assert dap.end_epoch() == "drop" and dap.subset.tolist() == [0, 1, 4]
    assert dap.losses.tolist() == [float("inf")] * 6  # Algorithm 1 empties L for the next epoch


def test_state_saved_mid_epoch_holds_the_losses_recorded_so_far():
    straight = DropAndPick(12, small_schedule(warmup=0), policy="dap", seed=1)
    straight.record(torch.arange(6), torch.arange(6, dtype=torch.float32))
    resumed = DropAndPick(12, small_schedule(warmup=0), policy="dap", seed=1)
    resumed.load_state_dict(straight.state_dict())
    inf = float("inf")
    assert resumed.losses.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] + [inf] * 6  # the first half's, carried over
    for dap in (straight, resumed):
        dap.record(torch.arange(6, 12), torch.arange(6, 0, -1, dtype=torch.float32))
        assert torch.equal(dap.losses, torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1]))
        assert dap.end_epoch() == "drop"
    # losses 0..5 then 6..1: the six highest are 6, 5, 5, 4, 4 and the tie at 3 to the lower index
    assert straight.subset.tolist() == resumed.subset.tolist() == [3, 4, 5, 6, 7, 8]


def test_non_finite_loss_names_epoch_and_samples():
    dap = DropAndPick(10, small_schedule())
    dap.record(torch.tensor([2, 3, 7]), torch.tensor([1.0, float("nan"), float("inf")]))
    with pytest.raises(NonFiniteLossError, match=r"epoch 1: non-finite loss for 2 samples, indices \[3, 7\]"):
        dap.end_epoch()


def test_drop_without_any_recorded_loss_is_an_error():
    dap = DropAndPick(10, small_schedule(warmup=0))
    with pytest.raises(RuntimeError, match="no loss was recorded"):
        dap.end_epoch()


def test_constructor_validation():
    with pytest.raises(ValueError, match="policy must be one of dap, random, full, scaled, static, infobatch, rs2, "
                                         "epsilon, ema, window, trusted, rho, seta, selective_backprop or an "
                                         "object"):
        DropAndPick(10, small_schedule(), policy="hardest")
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        DropAndPick(0, small_schedule())


def test_state_round_trip_continues_identically():
    def losses(i):
        return (i * 31) % 17

    straight = DropAndPick(50, small_schedule(), policy="random", seed=5)
    for _ in range(3):
        run_epoch(straight, losses)
    state = straight.state_dict()
    resumed = DropAndPick(50, small_schedule(), policy="random", seed=5)
    resumed.load_state_dict(state)
    while not straight.done:
        assert list(straight.sampler()) == list(resumed.sampler())
        run_epoch(straight, losses)
        run_epoch(resumed, losses)
        assert torch.equal(straight.subset, resumed.subset)
    assert resumed.samples_per_epoch == straight.samples_per_epoch and resumed.epoch == straight.epoch == 7


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_samples=51), "num_samples=50 into one with num_samples=51 .has the dataset changed size"),
    (dict(schedule=small_schedule(keep=0.6)),
     r"made for schedule=\{'epochs': 6, 'warmup': 1, 'interval': 1, 'keep': 0\.5, .*\} into one with schedule=\{"
     r"'epochs': 6, 'warmup': 1, 'interval': 1, 'keep': 0\.6, "),
    (dict(policy="dap"), "policy='random' into one with policy='dap'"),
])
def test_loading_a_state_for_another_setup_is_refused(kwargs, message):
    state = DropAndPick(50, small_schedule(), policy="random").state_dict()
    args = dict(num_samples=50, schedule=small_schedule(), policy="random") | kwargs
    with pytest.raises(ValueError, match=message):
        DropAndPick(**args).load_state_dict(state)


# -- sampler ----------------------------------------------------------------------------------

def test_sampler_yields_subset_in_seeded_fresh_order():
    dap = DropAndPick(100, small_schedule(warmup=0), seed=7)
    first = list(dap.sampler())
    assert sorted(first) == list(range(100)) and len(dap.sampler()) == 100
    assert first == list(DropAndPick(100, small_schedule(warmup=0), seed=7).sampler())
    assert first != list(DropAndPick(100, small_schedule(warmup=0), seed=8).sampler())
    run_epoch(dap, lambda i: i)
    second = list(dap.sampler())
    assert len(dap.sampler()) == 50 == len(second) and sorted(second) == dap.subset.tolist()
    warm = DropAndPick(100, small_schedule(warmup=2), seed=7)  # the same (full) subset in epochs 1 and 2
    epoch1 = list(warm.sampler())
    run_epoch(warm, lambda i: i)
    epoch2 = list(warm.sampler())
    assert warm.epoch == 2 and sorted(epoch1) == sorted(epoch2) == list(range(100))
    assert epoch1 != epoch2  # a fresh order each epoch, not one fixed order per seed


def test_sampler_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(DropAndPick(100, small_schedule()).sampler())
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (12, 4), (1, 2)])
def test_rank_shards_are_even_and_cover_the_subset(n, world):
    subset = torch.arange(100, 100 + n)
    shards = [shard_order(subset, 0, 1, rank, world) for rank in range(world)]
    assert len({s.numel() for s in shards}) == 1 and shards[0].numel() == math.ceil(n / world)
    assert set(torch.cat(shards).tolist()) == set(subset.tolist())
    padding = shards[0].numel() * world - n
    assert torch.cat(shards).numel() - len(set(torch.cat(shards).tolist())) == padding
