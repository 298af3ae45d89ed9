"""Policies beyond the paper: rs2, epsilon and ema; their exact choices, plans and state round trips."""

import math
import warnings

import numpy as np
import pytest
import torch

from droppick import RS2, DaPSchedule, DropAndPick, EpsilonGreedy, KeepHardestAverage
from droppick.policies.epsilon import random_count
from droppick.seeding import generator
from droppick.selection import extreme_mask, select_epsilon_greedy, select_hardest, update_average

SCHEDULE = DaPSchedule(epochs=8, warmup=2, interval=1, keep=0.5, active=None, reuse_at=[5])


def run_epoch(dap, loss_of):
    order = dap.sampler().indices()
    for batch in order.split(7):
        dap.record(batch, torch.tensor([float(loss_of(i, dap.epoch)) for i in batch.tolist()]))
    return dap.end_epoch()


def scrambled(i, epoch):
    return (i * 37 + epoch * 11) % 101  # a different ranking every epoch, no ties below 101 samples


# -- rs2 ----------------------------------------------------------------------------------------

def keys_of(seed, cycle, n):
    return torch.randint(0, 2**30 - 1, (n,), generator=generator(seed, "rs2", cycle), dtype=torch.int32).tolist()


def order(keys):
    """A cycle's order: by (random 30-bit key, index)."""
    return sorted(range(len(keys)), key=lambda i: (keys[i], i))


@pytest.mark.parametrize("n,target", [(10, 0.3), (10, 0.7), (23, 0.5), (10, 1.0)])
def test_rs2_serves_every_sample_once_before_any_repeats(n, target):
    """After t epochs of m samples, t*m = q*N + r: every sample has been served q or q + 1 times
    (never q + 2 before another is served at all), and every chunk holds m distinct samples."""
    epochs = 12
    dap = DropAndPick(n, DaPSchedule(epochs=epochs, warmup=0, interval=1, keep=0.5), policy=RS2(target), seed=3)
    m = max(1, round(target * n))
    counts = torch.zeros(n, dtype=torch.int64)
    for t in range(1, epochs + 1):
        assert dap.subset.numel() == m and bool((dap.subset[1:] > dap.subset[:-1]).all())
        counts[dap.subset] += 1
        assert set(counts.tolist()) <= {t * m // n, math.ceil(t * m / n)}, (t, counts.tolist())
        run_epoch(dap, scrambled)  # rs2 ignores the losses
    assert dap.samples_per_epoch == list(dap.plan().subset_sizes) == [m] * epochs


def test_rs2_chunks_follow_the_documented_stream():
    """N = 10, chunks of 4. A cycle's order is by (random 30-bit key, index): epochs 1-2 are the first
    cycle's first 8 samples; epoch 3 takes its 2 leftovers and the first 2 of the next cycle, whose
    keys put the leftovers last."""
    first = order(keys_of(0, 1, 10))
    leftover = first[8:]
    second = order([k + (2**30 if i in leftover else 0) for i, k in enumerate(keys_of(0, 2, 10))])
    assert sorted(second[-2:]) == sorted(leftover)  # the leftovers wait until the end of the next cycle
    expected = [first[0:4], first[4:8], leftover + second[:2], second[2:6], second[6:10]]
    dap = DropAndPick(10, DaPSchedule(epochs=5, warmup=0, interval=1, keep=0.5), policy=RS2(0.4), seed=0)
    events = []
    for chunk in expected:
        assert dap.subset.tolist() == sorted(chunk)
        events.append(run_epoch(dap, scrambled))
    assert events == ["resample"] * 4 + [None]
    assert dap.plan().events == ("resample",) * 4 + (None,)


def test_rs2_defaults_to_the_dap_plans_compute_and_matches_its_plan():
    dap = DropAndPick(200, SCHEDULE, policy="rs2", seed=1)
    m = round(SCHEDULE.plan(200).compute_fraction * 200)
    while not dap.done:
        run_epoch(dap, scrambled)
    assert dap.samples_per_epoch == list(dap.plan().subset_sizes) == [m] * 8
    assert dap.compute_fraction == pytest.approx(m / 200)
    with pytest.raises(ValueError, match=r"target_compute must lie in \(0, 1\]"):
        RS2(1.5)


# -- epsilon ------------------------------------------------------------------------------------

def test_epsilon_count_is_exact_and_rounds_towards_the_hardest():
    assert [random_count(k, 0.1) for k in (9, 10, 19, 20)] == [0, 1, 1, 2]
    assert random_count(100, 0.29) == 29  # 0.29 * 100 is 28.999999999999996 in binary
    assert random_count(7, 0.0) == 0 and random_count(7, 1.0) == 7
    with pytest.raises(ValueError, match=r"epsilon must be a number in \[0, 1\]"):
        EpsilonGreedy(1.2)


def test_epsilon_greedy_keeps_the_hardest_and_draws_the_rest_from_the_generator():
    subset = torch.tensor([1, 3, 4, 6, 8, 9, 11, 12, 15, 17])
    losses = torch.full((20,), 99.0)  # non-members: never read
    losses[subset] = torch.tensor([5.0, 1.0, 9.0, 7.0, 2.0, 8.0, 3.0, 7.0, 0.5, 4.0])
    # k = 6 with epsilon 0.5: the 3 hardest are 4 (9.0), 9 (8.0), 6 (7.0; 12 also has 7.0, the lower
    # index wins); the other 3 come uniformly from the remaining 7 members, in index order.
    chosen = EpsilonGreedy(0.5).select(subset, losses, 6, generator(4, "x"))
    rest = [1, 3, 8, 11, 12, 15, 17]
    drawn = [rest[i] for i in torch.randperm(7, generator=generator(4, "x"))[:3].tolist()]
    assert chosen.tolist() == sorted([4, 9, 6] + drawn)
    assert torch.equal(EpsilonGreedy(0.0).select(subset, losses, 6, generator(4, "x")), select_hardest(subset, losses, 6))
    everything = torch.arange(20)  # the all-data path (no gather) gives the same rule
    assert select_epsilon_greedy(everything, torch.arange(20.0), 4, 2, generator(1, "y")).tolist()[-2:] == [18, 19]


def test_epsilon_run_follows_the_plan_and_its_drops_match_the_reference():
    dap = DropAndPick(60, SCHEDULE, policy=EpsilonGreedy(0.25), seed=2)
    while not dap.done:
        before, epoch = dap.subset.clone(), dap.epoch
        losses = torch.full((60,), float("inf"))
        losses[before] = torch.tensor([float(scrambled(i, epoch)) for i in before.tolist()])
        if run_epoch(dap, scrambled) == "drop":
            k = before.numel() // 2
            expected = select_epsilon_greedy(before, losses, k, k // 4, generator(2, epoch, "select"))
            assert torch.equal(dap.subset, expected)
    assert dap.samples_per_epoch == list(dap.plan().subset_sizes) == list(SCHEDULE.plan(60).subset_sizes)
    assert dap.state_dict()["policy_params"] == {"epsilon": 0.25}


# -- ema ----------------------------------------------------------------------------------------

def test_moving_average_starts_at_the_first_loss_and_skips_samples_not_trained():
    inf = float("inf")
    average = torch.full((4,), inf)  # never observed
    update_average(average, torch.tensor([4.0, 2.0, inf, 6.0]), 0.5)
    assert average.tolist() == [4.0, 2.0, inf, 6.0]
    update_average(average, torch.tensor([0.0, inf, 8.0, -inf]), 0.5)
    assert average.tolist() == [2.0, 2.0, 8.0, -inf]  # 1: not trained, 2: first loss, 3: non-finite, last


def test_ema_drop_ranks_by_the_average_not_this_epochs_loss():
    """beta 0.5. Epoch 1 (warm-up): losses 4, 2, 8, 6. Epoch 2: 0, 6, 0.5 and sample 3 unrecorded:
    averages 2, 4, 4.25, 6, so the drop keeps {2, 3}; "dap" would keep 3 (unrecorded) and 1 (6).
    Epoch 3 trains {2, 3} on 1.25 and 2: averages 2, 4, 2.75, 4, the dropped ones unchanged."""
    schedule = DaPSchedule(epochs=4, warmup=1, interval=1, keep=0.5, reuse_at=[3])
    dap = DropAndPick(4, schedule, policy=KeepHardestAverage(0.5))
    dap.record(torch.arange(4), torch.tensor([4.0, 2.0, 8.0, 6.0]))
    assert dap.end_epoch() is None
    dap.record(torch.arange(3), torch.tensor([0.0, 6.0, 0.5]))
    assert dap.end_epoch() == "drop" and dap.subset.tolist() == [2, 3]
    dap.record(torch.tensor([2, 3]), torch.tensor([1.25, 2.0]))
    assert dap.end_epoch() == "pick"
    assert dap.policy.rule.average.tolist() == [2.0, 4.0, 2.75, 4.0]
    dap_rule = DropAndPick(4, schedule, policy="dap")
    dap_rule.record(torch.arange(4), torch.tensor([4.0, 2.0, 8.0, 6.0]))
    dap_rule.end_epoch()
    dap_rule.record(torch.arange(3), torch.tensor([0.0, 6.0, 0.5]))
    dap_rule.end_epoch()
    assert dap_rule.subset.tolist() == [1, 3]


def test_ema_keeps_a_never_observed_member_first_and_follows_the_plan():
    dap = DropAndPick(4, DaPSchedule(epochs=2, warmup=0, interval=1, keep=0.5), policy="ema")
    dap.record(torch.arange(3), torch.tensor([4.0, 2.0, 8.0]))
    assert dap.end_epoch() == "drop" and dap.subset.tolist() == [2, 3]
    run = DropAndPick(60, SCHEDULE, policy="ema", seed=1)
    while not run.done:
        run_epoch(run, scrambled)
    assert run.samples_per_epoch == list(run.plan().subset_sizes) == list(SCHEDULE.plan(60).subset_sizes)
    assert run.state_dict()["policy_params"] == {"ema_beta": 0.8}
    with pytest.raises(ValueError, match=r"ema beta must be a number in \[0, 1\)"):
        KeepHardestAverage(1.0)


def test_ema_ranks_a_non_finite_member_last_so_the_drop_keeps_k():
    """Sample 2 averaged 100, then its loss turns NaN: excluded for good, it must not take one of the
    drop's 3 places (which exclusion would then empty)."""
    dap = DropAndPick(6, DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.5), policy="ema", exclude_nonfinite=True)
    dap.record(torch.arange(6), torch.tensor([1.0, 2.0, 100.0, 4.0, 5.0, 6.0]))
    dap.end_epoch()
    dap.record(torch.arange(6), torch.tensor([1.0, 2.0, float("nan"), 4.0, 5.0, 6.0]))
    assert dap.end_epoch() == "drop" and dap.subset.tolist() == [3, 4, 5] and dap.last_nonfinite.tolist() == [2]


# -- resume -------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["rs2", "epsilon", "ema"])
def test_state_round_trip_mid_run_gives_identical_subsets(policy):
    """Saved after epoch 3 (rs2: mid-permutation), loaded into a fresh engine: the same subsets,
    orders and policy state to the end, as the uninterrupted run."""
    schedule = DaPSchedule(epochs=9, warmup=1, interval=1, keep=0.7, reuse_at=[5])
    straight = DropAndPick(37, schedule, policy=policy, seed=6, target_compute=0.3 if policy == "rs2" else None)
    for _ in range(3):
        run_epoch(straight, scrambled)
    state = straight.state_dict()
    resumed = DropAndPick(37, schedule, policy=policy, seed=6, target_compute=0.3 if policy == "rs2" else None)
    resumed.load_state_dict(state)
    while not straight.done:
        assert torch.equal(straight.sampler().indices(), resumed.sampler().indices())
        assert run_epoch(straight, scrambled) == run_epoch(resumed, scrambled)
        assert torch.equal(straight.subset, resumed.subset)
    for key, value in straight.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[key]) if torch.is_tensor(value) else value == \
            resumed.policy.state_dict()[key], key
    assert resumed.samples_per_epoch == straight.samples_per_epoch


@pytest.mark.parametrize("policy,kwargs,message", [
    ("epsilon", dict(epsilon=0.3), "policy_params"), ("ema", dict(ema_beta=0.5), "policy_params"),
    ("rs2", dict(target_compute=0.5), "policy_params"),
])
def test_a_state_with_other_settings_is_refused(policy, kwargs, message):
    state = DropAndPick(20, SCHEDULE, policy=policy).state_dict()
    with pytest.raises(ValueError, match=message):
        DropAndPick(20, SCHEDULE, policy=policy, **kwargs).load_state_dict(state)


# -- edges found by the mutation run (bench/mutation.md) ----------------------------------------

def test_rs2_a_chunk_ending_its_cycle_exactly_leaves_the_next_cycle_unshifted():
    """N = 10, chunks of 5: epoch 2 ends cycle 1 exactly (no leftovers), so epoch 3 is the first 5
    of a fresh cycle 2 whose keys push nothing last."""
    first, second = order(keys_of(0, 1, 10)), order(keys_of(0, 2, 10))
    policy = RS2(0.5)
    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), policy=policy, seed=0)
    assert dap.subset.tolist() == sorted(first[:5])
    run_epoch(dap, scrambled)
    assert dap.subset.tolist() == sorted(first[5:])
    assert (policy.position, policy.cycle) == (10, 1)  # cycle 1 served whole, cycle 2 not drawn yet
    run_epoch(dap, scrambled)
    assert dap.subset.tolist() == sorted(second[:5]) != sorted(first[:5])


def test_rs2_leftovers_keep_their_new_cycles_key_order():
    """N = 10, chunks of 6: epoch 2 takes cycle 1's 4 leftovers and 2 of cycle 2; epoch 3 then takes
    cycle 2's next 6, which reach 2 of the 4 leftovers: those with the lower cycle-2 keys."""
    first = order(keys_of(0, 1, 10))
    leftover = first[6:]
    second = order([k + (2**30 if i in leftover else 0) for i, k in enumerate(keys_of(0, 2, 10))])
    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), policy=RS2(0.6), seed=0)
    expected = [first[:6], leftover + second[:2], second[2:8]]
    assert sorted(second[6:8]) != sorted(leftover)[:2]  # this seed tells key order from index order
    for chunk in expected:
        assert dap.subset.tolist() == sorted(chunk)
        run_epoch(dap, scrambled)


def test_rs2_params_plan_and_state_of_a_fresh_policy():
    policy = RS2(0.3)
    assert policy.params() == {"target_compute": 0.3}
    assert policy.state_dict() == {"keys": None, "position": 0, "cycle": 0}
    used = RS2(0.3)
    used.first_subset(SCHEDULE, 10, 0)
    assert used.state_dict()["keys"].dtype == torch.int32 and used.state_dict()["cycle"] == 1
    used.load_state_dict(policy.state_dict())  # back to the start
    assert used.state_dict() == {"keys": None, "position": 0, "cycle": 0}
    # chunks of all N never change the subset: no event, as for "full"
    assert RS2(1.0).plan(SCHEDULE, 10).events == (None,) * 8
    assert RS2(0.9).plan(SCHEDULE, 10).events == ("resample",) * 7 + (None,)


def test_epsilon_and_ema_bounds_include_their_ends_and_refuse_non_numbers():
    for bad in (False, True, "0.1", None):
        with pytest.raises(ValueError, match=r"epsilon must be a number in \[0, 1\]"):
            EpsilonGreedy(bad)
        with pytest.raises(ValueError, match=r"ema beta must be a number in \[0, 1\)"):
            KeepHardestAverage(bad)
    subset, losses = torch.arange(2, 12), torch.arange(12.0)
    drawn = torch.randperm(10, generator=generator(3, "x"))[:4] + 2  # epsilon 1: all 4 at random
    assert EpsilonGreedy(1.0).select(subset, losses, 4, generator(3, "x")).tolist() == sorted(drawn.tolist())
    ema = KeepHardestAverage(0.0)  # beta 0: this epoch's losses only, i.e. "dap"
    ema.observe(torch.tensor([5.0, 1.0, 3.0, 2.0]))
    ema.observe(torch.tensor([1.0, 4.0, 2.0, 3.0]))
    assert ema.select(torch.arange(4), None, 2, None).tolist() == [1, 3]


def test_ema_state_loads_as_float32_and_from_a_fresh_policy():
    ema = KeepHardestAverage(0.5)
    ema.load_state_dict({"average": torch.tensor([1.0, 2.0], dtype=torch.float64)})
    assert ema.average.dtype == torch.float32
    ema.load_state_dict(KeepHardestAverage(0.5).state_dict())
    assert ema.average is None


def test_select_epsilon_greedy_refuses_with_the_bounds():
    subset, losses = torch.arange(5), torch.arange(5.0)
    with pytest.raises(ValueError, match=r"^k must lie in 1\.\.5 \(the subset size\), got 6$"):
        select_epsilon_greedy(subset, losses, 6, 0, generator(0, "x"))
    with pytest.raises(ValueError, match=r"^n_random must lie in 0\.\.k \(3\), got 4$"):
        select_epsilon_greedy(subset, losses, 3, 4, generator(0, "x"))
    drawn = torch.randperm(5, generator=generator(0, "x"))[:3].tolist()  # n_random = k: all at random
    assert select_epsilon_greedy(subset, losses, 3, 3, generator(0, "x")).tolist() == sorted(drawn)


def test_extreme_mask_ties_and_an_empty_choice():
    values = np.array([3.0, 1.0, 1.0, 1.0, 2.0])
    assert extreme_mask(values, 2, largest=False).tolist() == [False, True, True, False, False]
    assert extreme_mask(values, 2, largest=True).tolist() == [True, False, False, False, True]
    none = extreme_mask(values, 0, largest=True)
    assert none.dtype == np.bool_ and none.tolist() == [False] * 5


def test_moving_average_warns_about_nothing():
    """inf - inf (a first loss that is non-finite) and -inf * 0 (beta 0 on a non-finite average)
    are masked out: no RuntimeWarning reaches the user."""
    inf = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        average = torch.tensor([inf, inf, 1.0])
        update_average(average, torch.tensor([-inf, 2.0, -inf]), 0.5)  # +inf + -inf at 0
        update_average(average, torch.tensor([inf, 3.0, inf]), 0.0)  # -inf * 0 at 0 and 2
    assert average.tolist() == [-inf, 3.0, -inf]
