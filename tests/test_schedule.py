"""The planner against the paper's computation columns, and the schedule's validation."""

import dataclasses
import re

import pytest

from droppick import DaPSchedule, keep_count

CIFAR10 = dict(epochs=300, warmup=40, interval=10, keep=0.9, active=None, reuse_at=[150])  # Table 2 baseline
CIFAR100 = dict(CIFAR10, interval=20)  # Table 3 baseline
IMAGENET = dict(epochs=120, warmup=10, interval=2, keep=0.9, active=10, reuse_at=[30, 60, 90])  # Section 4.3.1

# (row, overrides of the baseline, the paper's computation %)
TABLE2 = [
    ("2a no warm-up", dict(warmup=0), 53), ("2a W=20", dict(warmup=20), 58), ("2a W=40", {}, 63),
    ("2a W=60", dict(warmup=60), 67), ("2a W=70", dict(warmup=70), 69), ("2a W=90", dict(warmup=90), 72),
    ("2b I=2", dict(interval=2), 27), ("2b I=5", dict(interval=5), 44), ("2b I=10", {}, 63),
    ("2b I=15", dict(interval=15), 73), ("2b I=20", dict(interval=20), 79), ("2b I=25", dict(interval=25), 83),
    ("2c p=0.7", dict(keep=0.7), 35), ("2c p=0.75", dict(keep=0.75), 39), ("2c p=0.8", dict(keep=0.8), 45),
    ("2c p=0.85", dict(keep=0.85), 52), ("2c p=0.9", {}, 63), ("2c p=0.95", dict(keep=0.95), 78),
    ("2d alpha=20", dict(active=20), 92), ("2d alpha=60", dict(active=60), 72), ("2d no active", {}, 63),
    ("2e no reusing", dict(reuse_at=[]), 45), ("2e reuse 150", {}, 63), ("2e reuse 150/225", dict(reuse_at=[150, 225]), 73),
]
TABLE3 = [
    ("3a I=10", dict(interval=10), 63), ("3a I=20", {}, 79), ("3a I=30", dict(interval=30), 86),
    ("3b alpha=40", dict(active=40), 92), ("3b alpha=60", dict(active=60), 87), ("3b no active", {}, 79),
]


@pytest.mark.parametrize("row,overrides,paper", TABLE2, ids=[r[0] for r in TABLE2])
def test_table2_computation(row, overrides, paper):
    plan = DaPSchedule(**dict(CIFAR10, **overrides)).plan(50000)
    assert abs(100 * plan.compute_fraction - paper) <= 0.7


@pytest.mark.parametrize("row,overrides,paper", TABLE3, ids=[r[0] for r in TABLE3])
def test_table3_computation(row, overrides, paper):
    plan = DaPSchedule(**dict(CIFAR100, **overrides)).plan(50000)
    assert abs(100 * plan.compute_fraction - paper) <= 0.7


@pytest.mark.parametrize("keep,paper", [(0.9, 75), (0.95, 86)])
def test_imagenet_computation(keep, paper):
    plan = DaPSchedule(**dict(IMAGENET, keep=keep)).plan(1281167)
    assert abs(100 * plan.compute_fraction - paper) <= 1.2


def test_pick_resets_interval_counter():
    """With the printed Algorithm 1 (no reset) alpha=20 never drops after the pick: 96.7%, not 92%."""
    s = DaPSchedule(**dict(CIFAR10, active=20))
    # Our reading drops once per cycle: after epoch 50 and after epoch 160.
    assert s.plan(50000).drop_epochs == [50, 160]


def test_drop_and_pick_epochs_of_baseline():
    plan = DaPSchedule(**CIFAR10).plan(50000)
    assert plan.drop_epochs[:3] == [50, 60, 70]
    assert 150 not in plan.drop_epochs  # the pick wins
    assert plan.pick_epochs == [150]
    assert plan.drop_epochs[-1] == 290 and 160 in plan.drop_epochs  # nothing is decided after epoch 300
    # Decisions apply from the next epoch: 50 trains on all, 51 on 45,000.
    assert plan.subset_sizes[49] == 50000 and plan.subset_sizes[50] == 45000
    assert plan.subset_sizes[150] == 50000  # epoch 151 has everything back
    assert plan.total_samples == sum(plan.subset_sizes)


def test_keep_count_is_exact():
    assert keep_count(50000, 0.9) == 45000
    assert keep_count(10, 0.7) == 7  # 10 * 0.7 = 6.999999999999999 in floating point
    assert keep_count(100, 0.29) == 29  # 100 * 0.29 = 28.999999999999996
    assert keep_count(3, 0.1) == 1  # never empty
    assert keep_count(7, 1.0) == 7


def test_pick_inside_warmup_keeps_first_drop_after_warmup():
    s = DaPSchedule(epochs=30, warmup=10, interval=3, keep=0.5, reuse_at=[5, 20])
    assert s.plan(100).drop_epochs == [13, 16, 19, 23, 26, 29]


def test_full_plan_never_drops_and_has_nothing_to_pick():
    from droppick.policies import Full

    plan = Full().plan(DaPSchedule(**CIFAR10), 50000)
    assert plan.compute_fraction == 1.0 and plan.drop_epochs == [] and plan.pick_epochs == []


def test_no_event_after_the_last_epoch():
    s = DaPSchedule(epochs=12, warmup=2, interval=1, keep=0.9, reuse_at=[6, 12])
    assert s.event_after(12) is None and s.event_after(11) == "drop"
    plan = s.plan(100)
    assert plan.events[-1] is None and 12 not in plan.drop_epochs + plan.pick_epochs


def test_plan_names_only_events_that_change_the_subset():
    # keep=1.0 drops nobody; a pick right after a pick has nothing to pick up.
    assert DaPSchedule(epochs=8, warmup=1, interval=1, keep=1.0, reuse_at=[4]).plan(50).events == (None,) * 8
    plan = DaPSchedule(epochs=8, warmup=3, interval=1, keep=0.5, reuse_at=[2, 5]).plan(50)
    assert plan.pick_epochs == [5] and plan.drop_epochs == [4, 6, 7]  # the pick at 2 (warm-up) restores nothing


@pytest.mark.parametrize("overrides,message", [
    (dict(keep=0.0), "keep must be in (0, 1]"),
    (dict(keep=1.01), "keep must be in (0, 1]"),
    (dict(keep=float("nan")), "keep must be a number"),
    (dict(interval=0), "interval must be >= 1"),
    (dict(warmup=-1), "warmup must be >= 0"),
    (dict(warmup=300), "warmup must be < epochs"),
    (dict(epochs=0), "epochs must be >= 1"),
    (dict(epochs=300.0), "epochs must be an integer"),
    (dict(interval=True), "interval must be an integer"),
    (dict(active=2.5), "active must be an integer"),
    (dict(active=0), "active must be >= 1"),
    (dict(reuse_at=[225, 150]), "strictly increasing"),
    (dict(reuse_at=[150, 150]), "strictly increasing"),
    (dict(reuse_at=[0]), "reuse_at entry must be >= 1"),
    (dict(reuse_at=[301]), "must lie in 1..epochs"),
    (dict(reuse_at=[150.0]), "reuse_at entry must be an integer"),
    (dict(min_keep=-0.1), "min_keep must be a number in [0, 1]"),
    (dict(min_keep=1.5), "min_keep must be a number in [0, 1]"),
    (dict(min_keep=float("nan")), "min_keep must be a number in [0, 1]"),
    (dict(min_keep=True), "min_keep must be a number in [0, 1]"),
    (dict(min_keep="0.2"), "min_keep must be a number in [0, 1]"),
])
def test_invalid_hyperparameters_are_refused(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DaPSchedule(**dict(CIFAR10, **overrides))


def test_schedule_round_trips_through_dict():
    s = DaPSchedule(**IMAGENET)
    assert DaPSchedule.from_dict(s.to_dict()) == s


# -- beyond the paper: a floor on the subset ---------------------------------------------------------

def test_a_floor_stops_drops_at_ceil_f_n_exactly():
    # N = 10, p = 0.5, f = 0.3: 10 -> 5 -> 3 (p alone: 2); at the floor a drop changes nothing, no event.
    plan = DaPSchedule(epochs=7, warmup=1, interval=1, keep=0.5, reuse_at=[5], min_keep=0.3).plan(10)
    assert plan.subset_sizes == (10, 10, 5, 3, 3, 10, 5)  # 0.3 * 10 is 3.0000000000000004: ceil would give 4
    assert plan.drop_epochs == [2, 3, 6] and plan.pick_epochs == [5]
    # f * N fractional: never fewer than 2.5 samples is 3; the floor never adds samples back.
    assert DaPSchedule(epochs=4, warmup=0, interval=1, keep=0.2, min_keep=0.25).plan(10).subset_sizes == (10, 3, 3, 3)
    assert DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.9, min_keep=0.99).plan(10).subset_sizes == (10, 10, 10)
    assert DaPSchedule(**CIFAR10, min_keep=0.0).plan(50000) == DaPSchedule(**CIFAR10).plan(50000)


def test_engine_with_a_floor_trains_what_the_plan_says():
    from droppick import DropAndPick

    schedule = DaPSchedule(epochs=7, warmup=1, interval=1, keep=0.5, reuse_at=[5], min_keep=0.3)
    for policy in ("dap", "random", "epsilon", "ema"):
        dap = DropAndPick(40, schedule, policy=policy, seed=1)
        while not dap.done:
            order = dap.sampler().indices()
            dap.record(order, ((order * 13 + dap.epoch) % 7).float())
            dap.end_epoch()
        assert dap.samples_per_epoch == list(schedule.plan(40).subset_sizes) == [40, 40, 20, 12, 12, 40, 20], policy


def test_a_floor_serialises_only_when_set():
    assert "min_keep" not in DaPSchedule(**CIFAR10).to_dict()  # states saved before the floor existed still load
    s = DaPSchedule(**CIFAR10, min_keep=0.2)
    assert s.to_dict()["min_keep"] == 0.2 and DaPSchedule.from_dict(s.to_dict()) == s


def test_budget_solver_keeps_the_floor_and_spends_the_budget_with_it():
    from droppick.budget import solve

    base = DaPSchedule(epochs=30, warmup=4, interval=1, keep=0.9, reuse_at=[15, 25], min_keep=0.15)
    schedule, compute = solve(base, 20000, 0.446, "keep")
    plan = schedule.plan(20000)
    assert schedule.min_keep == 0.15 and compute == plan.compute_fraction and abs(compute - 0.446) < 0.002
    assert min(plan.subset_sizes) == 3000  # the floor binds: p alone would go below it
    unfloored, _ = solve(dataclasses.replace(base, min_keep=0.0), 20000, 0.446, "keep")
    assert schedule.keep < unfloored.keep  # the floor's samples are paid for with a lower p
    floor, compute = solve(dataclasses.replace(base, keep=0.7), 20000, 0.5, "min_keep")
    assert abs(compute - 0.5) < 0.002 and floor.keep == 0.7


def test_values_are_normalised_to_plain_python_so_they_serialise():
    import json
    from fractions import Fraction

    import numpy as np

    s = DaPSchedule(epochs=np.int64(8), warmup=np.int32(2), interval=np.int64(2), keep=Fraction(1, 2),
                    active=np.int64(4), reuse_at=[np.int64(5)])
    assert [type(getattr(s, k)) for k in ("epochs", "warmup", "interval", "keep", "active")] == [int, int, int, float, int]
    assert type(s.reuse_at) is tuple and type(s.reuse_at[0]) is int
    assert json.loads(json.dumps(s.to_dict())) == {"epochs": 8, "warmup": 2, "interval": 2, "keep": 0.5, "active": 4,
                                                   "reuse_at": [5]}


def test_plan_to_dict_and_the_planners_refusals():
    plan = DaPSchedule(epochs=5, warmup=1, interval=1, keep=0.5, reuse_at=[3]).plan(10)
    assert plan.to_dict() == {"num_samples": 10, "epochs": 5, "compute_fraction": 40 / 50, "total_samples": 40,
                              "subset_sizes": [10, 10, 5, 10, 5], "drop_epochs": [2, 4], "pick_epochs": [3]}
    one = DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.5).plan(1)  # one sample: nothing to drop
    assert one.subset_sizes == (1, 1, 1) and one.events == (None, None, None)
    with pytest.raises(ValueError, match=r"^num_samples must be >= 1, got 0$"):
        DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.5).plan(0)
    with pytest.raises(ValueError, match=r"^cannot keep a fraction of an empty subset \(n=0\)$"):
        keep_count(0, 0.5)
    with pytest.raises(ValueError, match=r"^epoch must lie in 1\.\.3, got 4$"):
        DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.5).event_after(4)
    with pytest.raises(ValueError, match=r"^keep must be a number in \(0, 1\], got '0\.5'$"):
        DaPSchedule(epochs=3, warmup=1, interval=1, keep="0.5")


def test_a_floor_given_as_an_integer_is_stored_as_a_float():
    # min_keep=1 (keep everything) is accepted and held as 1.0, as keep is: the saved dict writes 1.0.
    s = DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5, min_keep=1)
    assert type(s.min_keep) is float and repr(s.to_dict()["min_keep"]) == "1.0"
    assert s.plan(10).subset_sizes == (10, 10, 10)
