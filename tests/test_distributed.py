"""Two real gloo processes: the global DaP selection equals one process fed every loss.

Workers are spawned from the test (and, end to end, by torchrun); a hang fails the test after
a timeout instead of blocking the suite. Each worker records only its own shard, exactly as a
rank of a training run does.
"""

import datetime
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from droppick import DaPSchedule, DropAndPick, KeepHardest, Scheduled
from launch import free_port, spawn

# Only light imports at module level: spawned workers import this module (droppick.train.trainer pulls
# in torchvision, seconds on a busy machine), so the end-to-end test imports the trainer itself.

WORLD = 2
TIMEOUT_S = 120
BIG_N = 2**24 + 11  # beyond float32's exact integers, and odd: a padding duplicate every epoch


def schedule(epochs=4):
    # warm-up epoch, drop, drop, pick after epoch 3
    return DaPSchedule(epochs=epochs, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[3])


def rank_records(dap, rank, world):
    """(indices, losses) that ``rank`` records this epoch: its shard, in batches as trained.

    A padding duplicate (a sample in two ranks' shards) gets a loss that differs per rank, so
    the merged result shows which rule combined them."""
    shards = [dap.sampler(r, world).indices() for r in range(world)]
    counts = torch.bincount(torch.cat(shards), minlength=dap.num_samples)
    idx = shards[rank]
    losses = ((idx * 7919 + dap.epoch * 31) % 101).float() + 1000.0 * rank * (counts[idx] > 1)
    return idx, losses


SCENARIOS = {  # name: (N, batch size)
    "padded": (11, 4),  # 11 samples on 2 ranks: one sample trained by both each epoch
    "smaller_than_one_batch_per_rank": (3, 32),
    "one_sample": (1, 32),
}


class Witness(Scheduled):
    """DaP, keeping a copy of the merged losses the policy is given after every epoch but the last."""

    def __init__(self):
        super().__init__(KeepHardest())
        self.given: list[torch.Tensor] = []

    def end_epoch(self, end):
        self.given.append(end.losses.clone())
        return super().end_epoch(end)


def run_scenario(n, batch, rank, world, sched):
    dap = DropAndPick(n, sched, policy=Witness(), seed=5)
    subsets = []
    while not dap.done:
        idx, loss = rank_records(dap, rank, world)
        for start in range(0, idx.numel(), batch):
            dap.record(idx[start:start + batch], loss[start:start + batch])
        dap.end_epoch()
        subsets.append(dap.subset.clone())
    return {"subsets": subsets, "losses": dap.policy.given, "samples_per_epoch": dap.samples_per_epoch}


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        result = {name: run_scenario(n, batch, rank, world, schedule()) for name, (n, batch) in SCENARIOS.items()}

        dap = DropAndPick(11, schedule())
        other = dap.sampler((rank + 1) % world, world).indices()
        mine = dap.sampler(rank, world).indices()
        foreign = other[~torch.isin(other, mine)][:1]
        try:
            dap.record(foreign, torch.ones(1))
        except ValueError as e:
            result["foreign_error"] = str(e)

        from droppick.distributed import combine_losses

        status = torch.tensor([1, 0] if rank == 0 else [0, 1], dtype=torch.uint8)
        losses = torch.tensor([1.0, float("inf")] if rank == 0 else [float("inf"), 2.0])
        merged = combine_losses(losses, status)
        result["combined"] = {"merged": merged, "inputs": (losses, status)}
        result["big"] = big_index_epoch(rank, world)
        result["beyond"] = {policy: run_policy(policy, rank, world) for policy in BEYOND}
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def big_index_epoch(rank, world):
    """Two drops over 2^24 + 11 samples. Epoch 1: only the 11 indices above 2^24 get a positive
    loss, so the drop keeps exactly them. Epoch 2 shards those 11 over 2 ranks: one of them, above
    2^24, is trained by both (padding) with loss 5 on rank 0 and 6 on rank 1, and another scores
    10; the drop keeps one sample. Merged by max the duplicate scores 6 and the 10 survives; a sum
    (11) would keep the duplicate, and a float32 index would merge 2^24 + 1 into 2^24."""
    keep = 11.5 / BIG_N
    dap = DropAndPick(BIG_N, DaPSchedule(epochs=3, warmup=0, interval=1, keep=keep, active=None, reuse_at=[]),
                      policy=Witness())
    shard = dap.sampler(rank, world).indices()
    dap.record(shard, torch.where(shard >= 2**24, (shard - 2**24 + 1).float(), 0.0))
    dap.end_epoch()
    first = dap.subset.clone()
    shards = [dap.sampler(r, world).indices() for r in range(world)]
    duplicate = int(shards[1][torch.isin(shards[1], shards[0])][0])
    others = sorted(set(first.tolist()) - {duplicate})
    mine = shards[rank]
    losses = torch.tensor([5.0 + rank if i == duplicate else 10.0 if i == others[0] else 1.0 for i in mine.tolist()])
    dap.record(mine, losses)
    dap.end_epoch()
    return {"first": first, "duplicate": duplicate, "winner": others[0], "final": dap.subset.clone(),
            "merged_duplicate_loss": float(dap.policy.given[1][duplicate]), "dtype": str(dap.subset.dtype),
            "samples_per_epoch": dap.samples_per_epoch}


# policies beyond the paper: seeded draws and per-rank policy state
BEYOND = ("rs2", "epsilon", "ema", "window", "trusted", "seta")


def beyond_engine(policy):
    """``policy`` over 23 samples (padded shards), drops and a pick; rs2 at 40% compute."""
    return DropAndPick(23, DaPSchedule(epochs=6, warmup=1, interval=1, keep=0.6, reuse_at=[4]), policy=policy,
                       seed=9, target_compute=0.4 if policy == "rs2" else None)


def run_policy(policy, rank, world):
    """A run of ``beyond_engine(policy)`` as a rank records it: the subset after every epoch and
    the policy's state at the end."""
    dap = beyond_engine(policy)
    subsets = []
    while not dap.done:
        idx, loss = rank_records(dap, rank, world)
        dap.record(idx, loss)
        dap.end_epoch()
        subsets.append(dap.subset.clone())
    return {"subsets": subsets, "state": dap.policy.state_dict(), "samples_per_epoch": dap.samples_per_epoch}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Both ranks' results, from one spawn of WORLD gloo processes."""
    out = tmp_path_factory.mktemp("ranks")
    spawn(worker, (WORLD, free_port(), str(out)), nprocs=WORLD)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def run_as_one_process(reference):
    """Run ``reference`` to its end as one process that sees every rank's records (a duplicate
    keeps its highest loss, the rule); its subset after every epoch."""
    subsets = []
    while not reference.done:
        merged = torch.full((reference.num_samples,), float("-inf"))
        for rank in range(WORLD):
            idx, loss = rank_records(reference, rank, WORLD)
            merged[idx] = torch.maximum(merged[idx], loss)
        seen = torch.isfinite(merged).nonzero().squeeze(1)
        reference.record(seen, merged[seen])
        reference.end_epoch()
        subsets.append(reference.subset.clone())
    return subsets


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_rank_selects_what_one_process_fed_all_losses_selects(ranks, name):
    n, batch = SCENARIOS[name]
    reference = DropAndPick(n, schedule(), policy=Witness(), seed=5)
    expected_subsets = run_as_one_process(reference)
    for result in ranks:
        got = result[name]
        assert [s.tolist() for s in got["subsets"]] == [s.tolist() for s in expected_subsets]
        assert all(torch.equal(a, b) for a, b in zip(got["losses"], reference.policy.given, strict=True))  # bit-identical
        # Each sample counted once, padding duplicates included: the plan's sizes exactly.
        assert got["samples_per_epoch"] == reference.samples_per_epoch == list(reference.plan().subset_sizes)


@pytest.mark.parametrize("policy", BEYOND)
def test_every_rank_holds_the_same_subset_under_each_rule_beyond_the_paper(ranks, policy):
    """Each rank recorded only its shard; all hold the subsets one process fed every loss holds."""
    reference = beyond_engine(policy)
    expected = [s.tolist() for s in run_as_one_process(reference)]
    assert len(set(map(tuple, expected))) > 1  # the subset changed during the run
    for result in ranks:
        got = result["beyond"][policy]
        assert [s.tolist() for s in got["subsets"]] == expected
        assert got["samples_per_epoch"] == reference.samples_per_epoch
        if policy != "seta":  # its sizes follow the losses: its plan is the all-data upper bound
            assert reference.samples_per_epoch == list(reference.plan().subset_sizes)
        assert same_state(got["state"], reference.policy.state_dict())


def same_state(a, b) -> bool:
    """Equal policy states: tensors equal exactly (NaN where NaN), nested dicts key by key."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if torch.is_tensor(a):
        return torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0))
    return a == b


def test_combining_the_losses_leaves_the_callers_tensors_as_they_were(ranks):
    """The statuses too: merged in place (a gloo tensor already on the CPU was not copied), a second
    combine of the same records (the trainer's, then end_epoch's) made every loss +inf, so a drop
    kept the lowest indices."""
    for rank, result in enumerate(ranks):
        (losses, status), (inputs_losses, inputs_status) = result["combined"]["merged"], result["combined"]["inputs"]
        assert losses.tolist() == [1.0, 2.0] and status.tolist() == [1, 1]
        assert inputs_status.tolist() == ([1, 0] if rank == 0 else [0, 1])
        assert inputs_losses.tolist()[rank] == float(rank + 1)


def test_padding_duplicate_keeps_its_highest_loss(ranks):
    """In "padded" the duplicate's rank-1 loss is +1000: it must win (max), not add up (sum)."""
    dap = DropAndPick(11, schedule(), seed=5)
    shards = [dap.sampler(r, WORLD).indices() for r in range(WORLD)]
    duplicate = int(shards[1][torch.isin(shards[1], shards[0])][0])
    base = float((duplicate * 7919 + 31) % 101)
    for result in ranks:
        assert float(result["padded"]["losses"][0][duplicate]) == base + 1000.0


def test_record_refuses_another_ranks_samples(ranks):
    for rank, result in enumerate(ranks):
        assert f"not in rank {rank}'s shard (world size 2)" in result["foreign_error"]
        assert "sampler=dap.sampler()" in result["foreign_error"]


def test_an_odd_n_beyond_2_to_the_24_merges_its_padding_duplicates_exactly(ranks):
    high = [2**24 + i for i in range(11)]
    for result in ranks:
        big = result["big"]
        assert big["first"].tolist() == high and big["dtype"] == "torch.int64"
        assert big["duplicate"] >= 2**24 and big["merged_duplicate_loss"] == 6.0  # max, not 5 + 6
        assert big["final"].tolist() == [big["winner"]]
        assert big["samples_per_epoch"] == [BIG_N, 11]  # the duplicates counted once
    assert ranks[0]["big"]["duplicate"] == ranks[1]["big"]["duplicate"]


# -- end to end: torchrun, two CPU processes, the real CLI -----------------------------------------

def test_torchrun_two_processes_train_one_run(tmp_path):
    from droppick.data.in_memory import make_fake_fashion_mnist
    from droppick.train.rundir import RunDir

    data = make_fake_fashion_mnist(tmp_path / "data", n_train=237, n_test=40, seed=0)  # odd: padded shards
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "droppick.cli.main", "train", "--data-dir", str(data), "--model", "small_cnn", "--epochs", "3",
           "--warmup", "1", "--interval", "1", "--keep", "0.6", "--reuse-at", "none", "--batch-size", "32",
           "--device", "cpu", "--no-progress", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("final test top-1") == 1  # only rank 0 reports

    run = RunDir(out)
    summary = json.loads(run.summary_path.read_text())
    plan = DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.6, active=None, reuse_at=[]).plan(237)
    assert summary["world_size"] == WORLD and summary["num_train_samples"] == 237
    assert summary["compute_fraction"] == pytest.approx(plan.compute_fraction, abs=1e-12)
    metrics = run.read_metrics()
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert [m["subset_size"] for m in metrics] == [m["samples_seen"] for m in metrics] == list(plan.subset_sizes)
    assert json.loads(run.config_path.read_text())["keep"] == 0.6
    assert [p.name for p in run.checkpoints()] == ["checkpoint-0002.pt", "checkpoint-0003.pt"]
    assert run.latest_checkpoint()["world_size"] == WORLD
    # A resume in another world size: test_elastic.py.
