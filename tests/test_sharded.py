"""Sharded DaP state (issue 33): each rank holds its own slice of the per-sample state only.

First the radix selection against ``select_hardest`` in one process (W ranks simulated: the
all-reduce is a sum), then the sharded engine against the unsharded one, in one process and in 2
and 4 real gloo processes: the same shards, events, subsets, compute, exclusions and suspects
every epoch, with ties, non-finite losses, padding duplicates, every rule that runs sharded, a
resume mid-epoch and resumes at other world sizes.
"""

import datetime
import inspect
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from droppick import DaPSchedule, DropAndPick, KeepHardest, KeepHardestAverage, KeepHardestTrusted, Scheduled
from droppick.policies import EpsilonGreedy, KeepRandom, KeepWindow
from droppick.selection import select_hardest
from droppick.sampler import shard_order
from droppick.seeding import generator
from droppick.sharded import (NEG_INF_KEY, POS_INF_KEY, float_keys, pack, select_hardest_sharded, shard_of, simulated,
                              slice_bounds)
from droppick.sharded_rules import select_rule
from droppick.sharded_engine import ShardedDropAndPick
from droppick.suspects import LossStats
from launch import free_port, spawn

SPECIAL = np.array([np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0, 1e-40, -1e-40, 3.4e38], dtype=np.float32)


def split(array, world):
    bounds = slice_bounds(array.size, world)
    return [array[bounds[r]:bounds[r + 1]] for r in range(world)]


def random_case(rng, trial):
    n = int(rng.integers(1, 80))
    kind = trial % 4
    if kind == 0:
        values = rng.integers(0, 4, n).astype(np.float32)  # ties everywhere
    elif kind == 1:
        values = rng.random(n, dtype=np.float32)
    elif kind == 2:
        values = rng.choice(SPECIAL, n)
    else:
        values = np.where(rng.random(n) < 0.5, rng.choice(SPECIAL, n), rng.integers(0, 3, n)).astype(np.float32)
    members = rng.random(n) < rng.choice([0.3, 0.8, 1.0])
    members[rng.integers(0, n)] = True
    return values, members


# -- the pure algorithm, W ranks simulated in one process -------------------------------------------------

def test_keys_order_as_the_floats_do_with_minus_zero_equal_to_zero_and_nan_ranked_with_minus_inf():
    rng = np.random.default_rng(1)
    values = np.concatenate([SPECIAL, rng.standard_normal(2000).astype(np.float32) * 1e3,
                             rng.integers(-3, 3, 200).astype(np.float32)])
    keys = float_keys(values).astype(np.int64)
    a, b = rng.integers(0, values.size, (2, 20000))
    assert np.array_equal(np.sign(keys[a] - keys[b]), np.sign(values[a].astype(np.float64) - values[b]))
    assert float_keys(np.array([-np.inf, np.inf, np.nan, -np.nan], dtype=np.float32)).tolist() == [
        NEG_INF_KEY, POS_INF_KEY, NEG_INF_KEY, NEG_INF_KEY]
    assert float_keys(np.array([1.0, 2.0], dtype=np.float32), np.array([True, False])).tolist()[1] == 0
    assert float_keys(np.array([-0.0, 0.0], dtype=np.float32)).tolist() == [0x80000000, 0x80000000]


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_sharded_selection_keeps_what_select_hardest_keeps(world):
    rng = np.random.default_rng(world)
    for trial in range(150):
        values, members = random_case(rng, trial)
        subset = torch.from_numpy(np.flatnonzero(members))
        n = subset.numel()
        for k in sorted({1, n, int(rng.integers(1, n + 1))}):
            expected = select_hardest(subset, torch.from_numpy(values), k)
            masks = select_hardest_sharded(split(values, world), split(members, world), k, simulated(world))
            got = np.flatnonzero(np.concatenate(masks))
            assert got.tolist() == expected.tolist(), (world, trial, values.tolist(), members.tolist(), k)


def test_more_ranks_than_samples_and_a_k_of_zero():
    values, members = np.array([2.0, 2.0, 1.0], dtype=np.float32), np.ones(3, dtype=bool)
    masks = select_hardest_sharded(split(values, 5), split(members, 5), 2, simulated(5))
    assert [m.tolist() for m in masks] == [[], [True], [], [True], [False]]  # ranks 0 and 2 own nothing
    assert not np.concatenate(select_hardest_sharded(split(values, 2), split(members, 2), 0, simulated(2))).any()


def test_a_k_beyond_the_members_is_refused():
    values, members = np.ones(6, dtype=np.float32), np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    with pytest.raises(ValueError, match="k = 3 exceeds the 2 members"):
        select_hardest_sharded(split(values, 2), split(members, 2), 3, simulated(2))


@pytest.mark.parametrize("world", [1, 3, 4])
def test_every_rule_that_runs_sharded_keeps_what_it_keeps_unsharded(world):
    """Each rule's select() over all N against select_rule over W simulated slices, the same seeded generator."""
    rng = np.random.default_rng(10 + world)
    for trial in range(40):
        values, members = random_case(rng, trial)
        n, total = int(members.sum()), values.size
        subset, losses = torch.from_numpy(np.flatnonzero(members)), torch.from_numpy(values)
        average = torch.from_numpy(rng.choice(np.array([0.5, 1.0, np.inf], dtype=np.float32), total))
        stats = LossStats(total)
        stats.update(torch.from_numpy(rng.integers(0, 3, total).astype(np.float32)), torch.from_numpy(rng.random(total) < 0.7))
        ema, trusted, above = KeepHardestAverage(), KeepHardestTrusted(0.2), KeepHardestTrusted(threshold=1.0)
        ema.average, trusted.stats, above.stats = average, stats, stats
        rules = [(KeepHardest(), None), (ema, average.numpy()), (EpsilonGreedy(0.4), None), (KeepRandom(), None),
                 (KeepWindow(0.3), None), (trusted, stats.scores().numpy()), (above, stats.scores().numpy())]
        for rule, by in rules:
            k = int(rng.integers(1, n + 1))
            expected = rule.select(subset, losses, k, torch.Generator().manual_seed(trial))
            masks = select_rule(rule, split(members, world), split(values, world), k, torch.Generator().manual_seed(trial),
                                simulated(world), total, None if by is None else split(by, world))
            got = np.flatnonzero(np.concatenate(masks))
            assert got.tolist() == sorted(expected.tolist()), (type(rule).__name__, world, trial, k)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_a_rank_draws_its_shard_of_the_order_as_the_sampler_does_without_the_subsets_indices(world):
    rng = np.random.default_rng(world)
    for total, density in ((50, 0.3), (7, 1.0), (64, 0.9), (9, 0.0)):  # 0.0: one member, padded world - 1 times
        mask = rng.random(total) < density
        mask[total // 2] = True
        subset = torch.from_numpy(np.flatnonzero(mask))
        bitmaps = [pack(m) for m in split(mask, world)]
        for rank in range(world):
            got = shard_of(bitmaps, slice_bounds(total, world), subset.numel(), generator(5, 3, "order"), rank, world)
            assert got.tolist() == shard_order(subset, 5, 3, rank, world).tolist()


# -- the engine in one process (world 1) ----------------------------------------------------------------

SCHEDULE = DaPSchedule(epochs=7, warmup=1, interval=1, keep=0.6, reuse_at=[4], min_keep=0.25)
POLICIES = ("dap", "ema", "epsilon", "random", "window", "trusted", "full", "scaled", "static")


def batch_losses(idx, epoch, rank=0, duplicate=None, nonfinite=False):
    """Integer-valued losses (ties at every threshold); a padding duplicate's falls with the rank (the
    highest must win: neither the last rank's nor a sum); with ``nonfinite`` a few samples get NaN or
    inf in epochs 2 and 5."""
    losses = ((idx * 7919 + epoch * 31) % 5).float()
    if duplicate is not None:
        losses = losses + 10.0 * (4 - rank) * duplicate
    if nonfinite and epoch in (2, 5):
        losses = torch.where(idx % 11 == epoch, float("nan") if epoch == 2 else float("inf"), losses)
    return losses


def test_the_sharded_engine_takes_every_argument_the_engine_takes():
    ours, theirs = (inspect.signature(c.__init__).parameters for c in (ShardedDropAndPick, DropAndPick))
    assert list(ours) == list(theirs)
    assert all(ours[p].default == theirs[p].default for p in ours if p != "shard_state")
    assert type(DropAndPick(5, SCHEDULE, shard_state=True)) is ShardedDropAndPick
    assert type(DropAndPick(5, SCHEDULE, shard_state=False)) is DropAndPick


@pytest.mark.parametrize("policy", POLICIES)
def test_one_process_sharded_equals_unsharded(policy):
    n = 41
    dense = DropAndPick(n, SCHEDULE, policy=policy, seed=3, exclude_nonfinite=True)
    sharded = DropAndPick(n, SCHEDULE, policy=policy, seed=3, exclude_nonfinite=True, shard_state=True)
    while not dense.done:
        idx = dense.sampler().indices()
        assert torch.equal(sharded.sampler().indices(), idx) and len(sharded.sampler()) == len(dense.sampler())
        losses = batch_losses(idx, dense.epoch, nonfinite=True)
        for start in range(0, idx.numel(), 8):
            for dap in (dense, sharded):
                dap.record(idx[start:start + 8], losses[start:start + 8])
        if dense.epoch == 3:
            for dap in (dense, sharded):
                dap.skip(idx[:2])
        assert dense.end_epoch() == sharded.end_epoch()
        assert torch.equal(sharded.gather_subset(), dense.subset) and sharded.subset_size == dense.subset.numel()
        assert torch.equal(sharded.last_nonfinite, dense.last_nonfinite)
        assert torch.equal(sharded.last_skipped, dense.last_skipped)
    assert sharded.samples_per_epoch == dense.samples_per_epoch and sharded.compute_fraction == dense.compute_fraction
    for k in (1, 6, n + 3):
        assert all(torch.equal(a, b) for a, b in zip(sharded.suspects(k), dense.suspects(k)))


def test_what_cannot_run_sharded_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="cannot run the policy 'rs2': RS2 draws each cycle's random keys"):
        DropAndPick(10, SCHEDULE, policy="rs2", shard_state=True)
    with pytest.raises(ValueError, match="cannot run the policy 'infobatch': InfoBatch weights every batch"):
        DropAndPick(10, SCHEDULE, policy="infobatch", shard_state=True)

    class Mine:
        def select(self, subset, losses, k, generator):
            return subset[:k]

    with pytest.raises(ValueError, match="selection rule 'Mine': its select\\(\\) reads the losses of all N"):
        DropAndPick(10, SCHEDULE, policy=Mine(), shard_state=True)

    class Watched(Scheduled):
        pass

    with pytest.raises(ValueError, match="cannot run the policy 'dap': its end_epoch\\(\\) reads"):  # it may decide otherwise
        DropAndPick(10, SCHEDULE, policy=Watched(KeepHardest()), shard_state=True)
    dap = DropAndPick(10, SCHEDULE, shard_state=True)
    with pytest.raises(ValueError, match="no rank holds the whole subset: use dap.subset_size"):
        _ = dap.subset
    with pytest.raises(ValueError, match="no rank holds a loss for every sample"):
        _ = dap.losses
    with pytest.raises(ValueError, match="rank 0 of 1 holds only its own shard"):
        dap.sampler(1, 2).indices()
    with pytest.raises(ValueError, match=r"samples \[10\] .*|sample indices must lie in 0..9"):
        dap.record(torch.tensor([10]), torch.ones(1))
    with pytest.raises(ValueError, match="one rank's shard of a sharded engine: load it with shard_state=True"):
        DropAndPick(10, SCHEDULE).load_state_dict(dap.state_dict())
    with pytest.raises(ValueError, match="not a sharded DropAndPick state"):
        dap.load_state_dict(DropAndPick(10, SCHEDULE).state_dict())


@pytest.mark.parametrize("policy", ["trusted", "ema"])
def test_one_process_a_resume_mid_epoch_continues_exactly(policy):
    """The rule's per-sample state (trusted's statistics, ema's average) and the epoch's records travel."""
    def engine():
        return DropAndPick(29, SCHEDULE, policy=policy, seed=4, shard_state=True)

    whole, first = engine(), engine()
    expected = run_sharded(whole, 0, 1)
    got = run_sharded(first, 0, 1, until=5, stop_mid_epoch=True)  # epoch 5 ends in a drop
    for load in (lambda d, st: d.load_state_dict(st), lambda d, st: d.load_state_dict([st])):  # a shard, or the list
        second = engine()
        load(second, first.state_dict())
        idx = second.sampler().indices()
        second.record(idx[idx.numel() // 2:], batch_losses(idx, second.epoch)[idx.numel() // 2:])
        second.end_epoch()
        assert [s.tolist() for s in got + [second.gather_subset()] + run_sharded(second, 0, 1)] == \
            [s.tolist() for s in expected]
    with pytest.raises(ValueError, match=r"made for policy_params=\{'x': 1\} into one with"):
        engine().load_state_dict({**first.state_dict(), "policy_params": {"x": 1}})


def test_record_refuses_a_sample_outside_the_subset_as_the_engine_does():
    dap = DropAndPick(10, DaPSchedule(epochs=3, warmup=0, interval=1, keep=0.5), shard_state=True)
    dap.record(torch.arange(10), torch.arange(10).float())
    dap.end_epoch()
    with pytest.raises(ValueError, match=r"epoch 2: samples \[0\] are not in the current subset"):
        dap.record(torch.tensor([0]), torch.ones(1))


def test_state_per_sample_is_a_slice_of_bitmaps_and_statistics():
    n = 1 << 16
    dap = DropAndPick(n, SCHEDULE, shard_state=True)
    held = {name: v.nbytes for name, v in vars(dap).items() if isinstance(v, (torch.Tensor, np.ndarray))}
    held |= {f"loss_stats.{k}": v.nbytes for k, v in vars(dap.loss_stats).items()}
    assert held["_bits"] == n // 8
    assert sum(held.values()) / n <= 20  # stats 6, shard samples 4, order 4, records 5, bitmap 1/8


# -- 2 and 4 gloo processes --------------------------------------------------------------------------------

TIMEOUT_S = 120
RULES = ("dap", "ema", "epsilon", "random", "window", "trusted", "static")
RESUME_N = 53


def duplicates(dense, idx, world):
    counts = torch.bincount(torch.cat([dense.sampler(r, world).indices() for r in range(world)]),
                            minlength=dense.num_samples)
    return (counts[idx] > 1).float()


def lockstep(n, policy, rank, world, nonfinite=False, batch=5):
    """The unsharded and the sharded engine side by side on this rank's records; what each saw."""
    kw = dict(policy=policy, seed=7, exclude_nonfinite=nonfinite, target_compute=0.5 if policy == "static" else None)
    dense, sharded = DropAndPick(n, SCHEDULE, **kw), DropAndPick(n, SCHEDULE, shard_state=True, **kw)
    out = {"same_shards": [], "events": [], "subsets": [], "sharded_subsets": [], "nonfinite": [], "sharded_nonfinite": []}
    while not dense.done:
        idx = dense.sampler().indices()
        out["same_shards"].append(torch.equal(idx, sharded.sampler().indices()))
        losses = batch_losses(idx, dense.epoch, rank, duplicates(dense, idx, world), nonfinite)
        for start in range(0, idx.numel(), batch):
            for dap in (dense, sharded):
                dap.record(idx[start:start + batch], losses[start:start + batch])
        out["events"].append((dense.end_epoch(), sharded.end_epoch()))
        out["subsets"].append(dense.subset.clone())
        out["sharded_subsets"].append(sharded.gather_subset())
        out["nonfinite"].append(dense.last_nonfinite.clone())
        out["sharded_nonfinite"].append(sharded.last_nonfinite.clone())
    out["compute"] = (dense.samples_per_epoch, sharded.samples_per_epoch)
    out["suspects"] = (dense.suspects(7), sharded.suspects(7))
    return out


def run_sharded(dap, rank, world, until=None, stop_mid_epoch=False):
    """Train ``dap`` (sharded) on ``batch_losses`` until the end of epoch ``until`` (or the run); with
    ``stop_mid_epoch`` return in the middle of the next epoch. The subset after each epoch."""
    subsets = []
    while not dap.done and (until is None or dap.epoch <= until):
        idx = dap.sampler().indices()
        losses = batch_losses(idx, dap.epoch, rank)
        dap.record(idx[: idx.numel() // 2], losses[: idx.numel() // 2])
        if stop_mid_epoch and dap.epoch == until:
            return subsets
        dap.record(idx[idx.numel() // 2:], losses[idx.numel() // 2:])
        dap.end_epoch()
        subsets.append(dap.gather_subset())
    return subsets


def resume_engine(policy="ema"):
    return DropAndPick(RESUME_N, SCHEDULE, policy=policy, seed=11, shard_state=True)


def worker(rank, world, port, out_dir, earlier_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        result = {f"{policy}-{n}": lockstep(n, policy, rank, world) for policy in RULES for n in (3, 37)}
        result["nonfinite"] = lockstep(37, "dap", rank, world, nonfinite=True)
        # a resume in the middle of epoch 3, this rank's records of it included, against no stop at all
        whole = run_sharded(resume_engine(), rank, world)
        first = resume_engine()
        before = run_sharded(first, rank, world, until=3, stop_mid_epoch=True)
        second = resume_engine()
        second.load_state_dict(first.state_dict())
        idx = second.sampler().indices()
        losses = batch_losses(idx, second.epoch, rank)
        second.record(idx[idx.numel() // 2:], losses[idx.numel() // 2:])
        second.end_epoch()
        after = [second.gather_subset()] + run_sharded(second, rank, world)
        result["resume"] = {"whole": whole, "resumed": before + after}
        # the shards after epoch 2, for a run of another world size to load; and that load of an earlier run's
        boundary = resume_engine()
        run_sharded(boundary, rank, world, until=2)
        torch.save(boundary.state_dict(), os.path.join(out_dir, f"shard{rank}.pt"))
        if earlier_dir:
            earlier = sorted(f for f in os.listdir(earlier_dir) if f.startswith("shard"))
            resharded = resume_engine()
            resharded.load_state_dict([torch.load(os.path.join(earlier_dir, f), weights_only=True) for f in earlier])
            result["resharded"] = [resharded.gather_subset()] + run_sharded(resharded, rank, world)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def spawn_world(tmp_path_factory, world, earlier=None):
    out = tmp_path_factory.mktemp(f"world{world}")
    spawn(worker, (world, free_port(), str(out), earlier and str(earlier)), nprocs=world)
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return spawn_world(tmp_path_factory, 2)


@pytest.fixture(scope="module")
def four(tmp_path_factory, two):
    return spawn_world(tmp_path_factory, 4, earlier=two[0])  # loads the 2 ranks' shards: resharded 2 -> 4


def ranks_of(request, name):
    return request.getfixturevalue(name)[1]


@pytest.mark.parametrize("world", ["two", "four"])
def test_gloo_sharded_and_unsharded_give_identical_subsets_events_and_compute(request, world):
    for result in ranks_of(request, world):
        for name in [f"{p}-{n}" for p in RULES for n in (3, 37)] + ["nonfinite"]:
            got = result[name]
            assert all(got["same_shards"]), name
            assert all(a == b for a, b in got["events"]), (name, got["events"])
            assert [s.tolist() for s in got["subsets"]] == [s.tolist() for s in got["sharded_subsets"]], name
            assert [s.tolist() for s in got["nonfinite"]] == [s.tolist() for s in got["sharded_nonfinite"]], name
            dense_compute, sharded_compute = got["compute"]
            assert dense_compute == sharded_compute, name
            (dense_ids, dense_scores), (ids, scores) = got["suspects"]
            assert torch.equal(dense_ids, ids) and torch.equal(dense_scores, scores), name
        events = [e for e, _ in result["dap-37"]["events"]]
        assert events.count("drop") >= 2 and "pick" in events  # the schedule really dropped and picked
        assert any(s.numel() for s in result["nonfinite"]["nonfinite"])  # and samples were excluded


@pytest.mark.parametrize("world", ["two", "four"])
def test_gloo_a_sharded_resume_mid_epoch_is_exact(request, world):
    for result in ranks_of(request, world):
        whole, resumed = result["resume"]["whole"], result["resume"]["resumed"]
        assert len(whole) == SCHEDULE.epochs and [s.tolist() for s in resumed] == [s.tolist() for s in whole]
        assert len({tuple(s.tolist()) for s in whole}) > 2


def reference_after_reshard(old_world, new_world):
    """One unsharded process fed every rank's losses: epochs 1-2 as ``old_world`` ranks record them,
    the rest as ``new_world`` ranks do (a padding duplicate keeps its highest loss, the rule)."""
    dense = DropAndPick(RESUME_N, SCHEDULE, policy="ema", seed=11)
    subsets = []
    while not dense.done:
        world = old_world if dense.epoch <= 2 else new_world
        merged = torch.full((RESUME_N,), float("-inf"))
        for rank in range(world):
            idx = dense.sampler(rank, world).indices()
            merged[idx] = torch.maximum(merged[idx], batch_losses(idx, dense.epoch, rank))
        seen = torch.isfinite(merged).nonzero().squeeze(1)
        dense.record(seen, merged[seen])
        dense.end_epoch()
        subsets.append(dense.subset.clone())
    return subsets


def test_gloo_a_resume_at_another_world_size_reshards_and_continues_as_the_unsharded_engine(four, tmp_path):
    expected = [s.tolist() for s in reference_after_reshard(2, 4)]
    for result in four[1]:  # 2 ranks' shards after epoch 2, loaded by 4
        assert [s.tolist() for s in result["resharded"]] == expected[1:]
    # and 4 ranks' shards loaded by one process without a process group
    shards = [torch.load(four[0] / f"shard{r}.pt", weights_only=True) for r in range(4)]
    alone = resume_engine()
    alone.load_state_dict(shards)
    assert [s.tolist() for s in [alone.gather_subset()] + run_sharded(alone, 0, 1)] == \
        [s.tolist() for s in reference_after_reshard(4, 1)[1:]]
    with pytest.raises(ValueError, match="one rank's shard of 4: pass the list of all 4 shards"):
        resume_engine().load_state_dict(shards[1])


def test_the_distributed_pages_sharded_block_runs_as_written():
    from test_library_api import readme_block, user_namespace

    ns = user_namespace()
    exec(readme_block("seed=0, shard_state=True)"), ns)
    dap = ns["dap"]
    assert type(dap) is ShardedDropAndPick and dap.done and dap.samples_per_epoch == list(dap.plan().subset_sizes)
    assert ns["shard"]["shard"] == {"rank": 0, "world": 1, "lo": 0, "hi": 60} and dap.members().sum() == dap.subset_size
