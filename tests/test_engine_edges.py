"""The engine's less-travelled paths, found untested by the mutation run (bench/mutation.md):
skipped and non-finite samples, the rank-shard check, state round trips of every field, and the
exact words of its errors (each names the fix)."""

import re

import pytest
import torch

from droppick import DaPSchedule, DropAndPick, NonFiniteLossError
from droppick.sampler import shard_order

INF = float("inf")


def schedule(**kw):
    return DaPSchedule(**dict(dict(epochs=6, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[4]), **kw))


def train_all(dap, loss_of=lambda i: float(i)):
    order = dap.sampler().indices()
    dap.record(order, torch.tensor([loss_of(i) for i in order.tolist()]))
    return dap.end_epoch()


def test_skipped_samples_count_as_untrained_and_leave_every_later_subset():
    dap = DropAndPick(10, schedule(), policy="dap", seed=0)
    dap.record(torch.arange(7), torch.arange(7, dtype=torch.float32))
    dap.skip(torch.tensor([9]))  # an unreadable image: no loss
    dap.record(torch.tensor([7]), torch.tensor([7.0]))
    dap.skip([8])  # a list will do: skipped in another batch, excluded on top of the first
    assert dap.seen.tolist() == [1] * 8 + [3, 3] and dap.losses[8:].tolist() == [-INF, -INF]
    assert dap.end_epoch() == "exclude"  # a warm-up epoch: nothing else changed the subset
    assert dap.last_skipped.tolist() == [8, 9] and dap.last_nonfinite.tolist() == []
    assert dap.last_nonfinite.dtype == torch.int64 and dap.samples_per_epoch == [8]
    assert dap.excluded.tolist() == [False] * 8 + [True, True] and dap.subset.tolist() == list(range(8))
    while not dap.done:  # the pick after epoch 3 brings all data back, less the skipped
        train_all(dap)
        assert not {8, 9} & set(dap.subset.tolist())
    assert dap.samples_per_epoch == [8, 8, 4, 2, 8, 4]
    dropped = DropAndPick(10, schedule(warmup=0), policy="dap", seed=0)
    train_all(dropped)  # the drop after epoch 1 keeps 5..9
    with pytest.raises(ValueError, match=re.escape("epoch 2: samples [3] are not in the current subset")):
        dropped.skip(torch.tensor([3]))


def test_a_skip_after_a_drop_is_excluded_on_top_of_the_drop():
    dap = DropAndPick(10, schedule(warmup=0), policy="dap", seed=0)
    dap.record(torch.arange(9), torch.arange(9, dtype=torch.float32))
    dap.skip(torch.tensor([9]))
    assert dap.end_epoch() == "drop" and dap.subset.tolist() == [4, 5, 6, 7, 8]  # the skipped one ranks last
    assert dap.last_skipped.tolist() == [9] and dap.excluded.nonzero().flatten().tolist() == [9]


def test_non_finite_losses_stop_with_the_fix_or_are_excluded():
    bad = torch.arange(25)
    dap = DropAndPick(30, schedule())
    dap.record(torch.arange(30), torch.cat([torch.full((25,), float("nan")), torch.ones(5)]))
    message = (f"epoch 1: non-finite loss for 25 samples, indices {list(range(20))} .... Lower the learning rate or "
               "check those samples' inputs and labels (or set exclude_nonfinite, --exclude-nonfinite, to leave "
               "such samples out and train on).")
    with pytest.raises(NonFiniteLossError) as err:
        dap.end_epoch()
    assert str(err.value) == message
    exact = DropAndPick(30, schedule())
    exact.record(torch.arange(20), torch.full((20,), INF))
    with pytest.raises(NonFiniteLossError, match=r"indices \[0, 1, .*, 19\]\. Lower"):  # 20: no " ..."
        exact.end_epoch()

    dap = DropAndPick(30, schedule(), exclude_nonfinite=True)
    dap.record(torch.arange(30), torch.cat([torch.full((25,), float("nan")), torch.ones(5)]))
    assert dap.end_epoch() == "exclude" and torch.equal(dap.last_nonfinite, bad)
    assert dap.subset.tolist() == [25, 26, 27, 28, 29] and dap.samples_per_epoch == [30]
    assert dap.excluded.sum() == 25


def test_under_ddp_record_accepts_only_this_ranks_shard(monkeypatch):
    import droppick.distributed as distributed

    monkeypatch.setattr(distributed, "rank_and_world", lambda: (1, 2))
    dap = DropAndPick(10, schedule(), seed=4)
    mine = shard_order(dap.subset, 4, 1, 1, 2)
    assert torch.equal(dap.sampler().indices(), mine)  # the sampler defaults to the process group's rank
    other = shard_order(dap.subset, 4, 1, 0, 2)
    with pytest.raises(ValueError) as err:
        dap.record(other[:1], torch.ones(1))
    assert str(err.value) == (f"epoch 1: samples {other[:1].tolist()} are not in rank 1's shard (world size 2). Load "
                              "batches with sampler=dap.sampler() on every rank, so that each rank trains on and "
                              "records only its own shard.")
    dap.record(mine, torch.ones(mine.numel()))
    dap.flush()
    assert dap.seen.sum() == 5
    dap.end_epoch()  # the next epoch's shard is another draw: the cached mask follows the epoch
    mine2 = shard_order(dap.subset, 4, 2, 1, 2)
    dap.record(mine2, torch.ones(mine2.numel()))
    with pytest.raises(ValueError, match="not in rank 1's shard"):
        dap.record(shard_order(dap.subset, 4, 2, 0, 2)[:1], torch.ones(1))


def test_sampler_takes_rank_and_world_size_and_batch_weights_the_policys():
    dap = DropAndPick(11, schedule(), seed=2)
    sampler = dap.sampler(1, 3)
    assert (sampler.rank, sampler.world_size, len(sampler)) == (1, 3, 4)
    assert torch.equal(sampler.indices(), shard_order(dap.subset, 2, 1, 1, 3))
    ib = DropAndPick(8, schedule(), policy="infobatch", seed=0)
    train_all(ib, lambda i: [0.1, 0.2, 0.3, 5.0, 6.0, 0.15, 0.25, 7.0][i])
    weights = ib.policy.weights
    assert torch.equal(ib.batch_weights(torch.tensor([4, 0, 1])), weights[[4, 0, 1]])
    assert DropAndPick(8, schedule()).batch_weights(torch.arange(3)) is None


def test_record_keeps_compact_copies_of_its_inputs():
    dap = DropAndPick(10, schedule())
    indices, losses = torch.tensor([1, 2], dtype=torch.int32), torch.tensor([0.5, 1.5], dtype=torch.float64)
    dap.record(indices, losses)
    (kept_indices, kept_losses), = dap._pending
    assert kept_indices.dtype == torch.int32 and kept_losses.dtype == torch.float32  # half of int64, as documented
    indices[0], losses[0] = 7, 9.0
    assert dap.losses[[1, 2, 7]].tolist() == [0.5, 1.5, INF]


def test_record_and_end_epoch_refuse_with_the_fix():
    dap = DropAndPick(10, schedule())
    with pytest.raises(ValueError) as err:
        dap.record(torch.arange(4), torch.ones(3))
    assert str(err.value) == ("record() needs one loss per sample: got losses of shape (3,) for 4 indices. Compute "
                              "the loss with reduction='none', e.g. F.cross_entropy(logits, targets, reduction='none'), "
                              "and take .mean() for backward.")
    with pytest.raises(ValueError, match=re.escape("indices must be an integer tensor (int64), got torch.float32")):
        dap.record(torch.tensor([1.0]), torch.ones(1))
    train_all(dap)
    train_all(dap)  # the drop after epoch 2 keeps 5..9
    with pytest.raises(ValueError) as err:
        dap.record(torch.arange(12) % 5, torch.ones(12))
    assert str(err.value) == ("epoch 3: samples [0, 1, 2, 3, 4, 0, 1, 2, 3, 4] are not in the current subset. Load "
                              "batches with sampler=dap.sampler() and pass the indices IndexedDataset returns.")
    while not dap.done:
        train_all(dap)
    with pytest.raises(RuntimeError, match=re.escape("all 6 epochs have ended; nothing more to record")):
        dap.record(torch.tensor([0]), torch.ones(1))
    with pytest.raises(RuntimeError, match=re.escape("all 6 epochs have already ended")):
        dap.end_epoch()


def test_nothing_is_decided_after_the_last_epoch():
    for policy in ("dap", "infobatch"):
        dap = DropAndPick(10, schedule(reuse_at=[]), policy=policy, seed=0)
        events = [train_all(dap) for _ in range(6)]
        assert events[-1] is None and dap.done, policy


def test_random_drops_follow_the_seed():
    subsets = {}
    for seed in (0, 0, 1):
        dap = DropAndPick(40, schedule(), policy="random", seed=seed)
        train_all(dap)
        train_all(dap)
        subsets.setdefault(seed, []).append(dap.subset.tolist())
    assert subsets[0][0] == subsets[0][1] != subsets[1][0]


def test_every_field_survives_a_state_round_trip():
    dap = DropAndPick(10, schedule(), exclude_nonfinite=True, seed=3)
    dap.record(torch.arange(10), torch.tensor([1.0, float("nan")] + [2.0] * 8))
    dap.end_epoch()
    dap.record(torch.tensor([2, 3]), torch.tensor([4.0, 5.0]))
    state = dap.state_dict()
    assert state["excluded"] is not dap.excluded and torch.equal(state["excluded"], dap.excluded)
    state["seen"] = state["seen"].long()  # what an older writer may have stored: read back as uint8
    state["subset"] = state["subset"].int()
    restored = DropAndPick(10, schedule(), exclude_nonfinite=True, seed=3)
    restored.load_state_dict(state)
    assert restored.excluded.dtype == torch.bool and restored.excluded.nonzero().flatten().tolist() == [1]
    assert restored.seen.dtype == torch.uint8 and restored.seen.tolist() == [0, 0, 1, 1] + [0] * 6
    assert restored.subset.dtype == torch.int64 and torch.equal(restored.subset, dap.subset)
    assert (restored.epoch, restored.seed, restored.samples_per_epoch) == (2, 3, [10])


def test_a_state_of_another_format_or_setup_is_refused_with_what_to_do():
    state = DropAndPick(10, schedule()).state_dict()
    with pytest.raises(ValueError) as err:
        DropAndPick(10, schedule()).load_state_dict(state | {"format": 3})
    assert str(err.value) == ("DropAndPick state has format 3; this version reads format 4 (format 3 is droppick "
                              "0.2's, 2 is 0.1's): finish that run with the version that started it, or start a new run")
    with pytest.raises(ValueError) as err:
        DropAndPick(10, schedule(), policy="random").load_state_dict(state)
    assert str(err.value) == "cannot load a DropAndPick state made for policy='dap' into one with policy='random'"


def test_a_fresh_engine_and_a_clean_epoch_report_nothing_excluded():
    dap = DropAndPick(10, schedule())
    assert dap.seed == 0 and dap.seen.dtype == torch.uint8
    for attr in ("last_nonfinite", "last_skipped"):
        assert getattr(dap, attr).tolist() == [] and getattr(dap, attr).dtype == torch.int64, attr
    train_all(dap)
    assert dap.last_nonfinite.tolist() == [] and dap.last_nonfinite.dtype == torch.int64 and dap.excluded is None
    with pytest.raises(ValueError, match=r"^schedule must be a DaPSchedule, got dict$"):
        DropAndPick(10, schedule().to_dict())


def test_exclusions_add_up_over_epochs_until_none_is_left():
    dap = DropAndPick(3, schedule(reuse_at=[]), exclude_nonfinite=True)
    dap.record(torch.arange(3), torch.tensor([1.0, 1.0, INF]))
    assert dap.end_epoch() == "exclude" and dap.subset.tolist() == [0, 1]
    dap.record(torch.tensor([0, 1]), torch.tensor([float("nan"), 1.0]))
    dap.end_epoch()  # one sample left is still a subset
    assert dap.subset.tolist() == [1] and dap.excluded.tolist() == [True, False, True]
    dap.record(torch.tensor([1]), torch.tensor([float("nan")]))
    with pytest.raises(NonFiniteLossError, match=r"^epoch 3: every sample of the subset has been excluded for a "
                                                 r"non-finite loss; lower the learning rate or check the data$"):
        dap.end_epoch()


def test_non_finite_lists_mark_more_than_twenty():
    dap = DropAndPick(30, schedule())
    dap.record(torch.arange(21), torch.full((21,), INF))
    with pytest.raises(NonFiniteLossError, match=re.escape(f"indices {list(range(20))} .... Lower")):
        dap.end_epoch()


def test_a_policy_may_answer_with_a_bool_mask():
    from droppick.policies import Change, Policy

    class EvenAfterEpochOne(Policy):
        def end_epoch(self, end):
            return Change(torch.arange(end.num_samples) % 2 == 0, "even")

    dap = DropAndPick(6, schedule(), policy=EvenAfterEpochOne())
    assert train_all(dap) == "even" and dap.subset.tolist() == [0, 2, 4]


@pytest.mark.parametrize("subset,valid", [
    ([0], True), ([0, 9], True), ([], False), ([0, 10], False), ([3, 2], False), ([2, 2], False), ([1, 3, 2], False),
])
def test_a_state_with_an_invalid_subset_is_refused(subset, valid):
    state = DropAndPick(10, schedule()).state_dict() | {"subset": torch.tensor(subset, dtype=torch.int64)}
    if valid:
        DropAndPick(10, schedule()).load_state_dict(state)
        return
    with pytest.raises(ValueError, match="^" + re.escape("DropAndPick state holds an invalid subset (must be "
                                                         "sorted, unique, within 0..N-1)") + "$"):
        DropAndPick(10, schedule()).load_state_dict(state)


def test_loaded_tensors_take_the_engines_dtypes():
    dap = DropAndPick(4, schedule(), exclude_nonfinite=True)
    dap.record(torch.arange(4), torch.tensor([1.0, INF, 2.0, 3.0]))
    dap.end_epoch()
    state = dap.state_dict()
    state |= {"losses": state["losses"].double(), "excluded": state["excluded"].to(torch.uint8)}
    restored = DropAndPick(4, schedule(), exclude_nonfinite=True)
    restored.load_state_dict(state)
    assert restored.losses.dtype == torch.float32 and restored.excluded.dtype == torch.bool


def test_the_engine_keeps_its_own_copy_of_a_policys_mask():
    """A policy may keep the bool mask it answered with and reuse its buffer later; the engine's
    membership check must not change with it."""
    from droppick.policies import Policy

    class KeepsItsMask(Policy):
        def first_subset(self, schedule, num_samples, seed):
            self.mask = torch.arange(num_samples) < 5
            return self.mask

    policy = KeepsItsMask()
    dap = DropAndPick(10, schedule(), policy=policy)
    policy.mask.fill_(False)  # the policy reuses its buffer
    dap.record(torch.arange(5), torch.ones(5))  # still members
    with pytest.raises(ValueError, match=re.escape("[7] are not in the current subset")):
        dap.record(torch.tensor([7]), torch.ones(1))
