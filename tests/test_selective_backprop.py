"""Selective Backprop: which batches select, what a selection draws, what a step runs
(backprop_losses), what a run reports it spent, one process and two, and that a stopped run resumes
to the same result."""

import json
import math

import pytest
import torch

from droppick import DaPSchedule, DropAndPick, backprop_losses
from droppick.cli.main import main
from droppick.policies.selective_backprop import FORWARD_COST, SelectiveBackprop

from launch import torchrun


def test_batches_select_inside_the_epochs_asked_for_except_every_interrupt_th():
    sb = SelectiveBackprop(keep=0.5, start=2, end=3, interrupt=3)
    assert [sb.selects(1, b) for b in range(3)] == [False, False, False]  # before start
    assert [sb.selects(2, b) for b in range(6)] == [True, True, False, True, True, False]
    assert not sb.selects(4, 0)  # after end
    assert not SelectiveBackprop(keep=1.0).selects(1, 0)  # keep 1: nothing to leave out


def test_a_selection_draws_keep_x_n_distinct_samples_favouring_high_losses():
    sb = SelectiveBackprop(keep=0.25)
    losses = torch.arange(16.0)  # sample 15 the hardest
    chosen = [sb.choose(losses, 0, 1, batch) for batch in range(400)]
    assert all(c.numel() == 4 and c.unique().numel() == 4 for c in chosen)
    hits = torch.bincount(torch.cat(chosen), minlength=16)
    # rank weights ((r + 0.5) / 16)^3: the hardest quarter drawn about 1,000 times, the easiest about 10
    assert hits[15] > 0.6 * 400 and hits[12:].sum() > 50 * hits[:4].sum()
    assert all(hits[r] <= hits[r + 4] for r in range(12))  # a harder rank is drawn at least as often
    assert torch.equal(sb.choose(losses, 0, 1, 7), chosen[7])  # seeded by (seed, epoch, batch)
    assert sb.take_counts() == {"samples_backprop": 401 * 4, "step_equivalents": 401 * 4 + FORWARD_COST * 401 * 16}
    assert sb.take_counts() == {"samples_backprop": 0, "step_equivalents": 0.0}
    with pytest.raises(ValueError, match="keep must be a number in"):
        SelectiveBackprop(keep=0.0)


class Calls:
    """``sample_losses`` for backprop_losses: loss i is i + 1, and each call is noted (the positions
    asked for, whether gradients were on)."""

    def __init__(self, n: int):
        self.weights = torch.ones(n, requires_grad=True)
        self.calls = []

    def __call__(self, at):
        self.calls.append((at, torch.is_grad_enabled()))
        return self.weights[at] * torch.arange(1.0, self.weights.numel() + 1)[at]


def test_backprop_losses_runs_a_selecting_batch_twice_and_any_other_once_and_counts_both():
    schedule = DaPSchedule(epochs=2, warmup=1, interval=1, keep=1.0)
    dap = DropAndPick(10, schedule, policy=SelectiveBackprop(keep=0.3, start=1, interrupt=2), seed=4)
    step = Calls(10)
    recorded, trained = backprop_losses(dap, 0, step)  # batch 0 selects
    (everything, grad_off), (part, grad_on) = step.calls
    assert everything == slice(None) and not grad_off and grad_on
    drawn = SelectiveBackprop(keep=0.3).choose(torch.arange(1.0, 11), 4, 1, 0)  # the engine's seed, the epoch, the batch
    assert torch.equal(part, drawn)
    assert part.numel() == 3 and torch.equal(trained, part + 1.0) and trained.requires_grad  # int(0.3 x 10)
    assert torch.equal(recorded, torch.arange(1.0, 11)) and not recorded.requires_grad
    step.calls.clear()
    recorded, trained = backprop_losses(dap, 1, step)  # every second batch trains whole
    assert step.calls == [(slice(None), True)] and trained.requires_grad and torch.equal(recorded, trained.detach())
    assert dap.policy.take_counts() == {"samples_backprop": 3 + 10, "step_equivalents": 13 + FORWARD_COST * 10}

    full = DropAndPick(10, schedule, policy="full", seed=4)  # any other policy: one pass, nothing counted
    step = Calls(10)
    recorded, trained = backprop_losses(full, 0, step)
    assert step.calls == [(slice(None), True)] and torch.equal(recorded, trained.detach())


def test_a_run_reports_samples_back_propagated_and_step_equivalents_and_resumes_exactly(fake_fashion, tmp_path):
    args = ["train", "--data-dir", str(fake_fashion), "--epochs", "4", "--reuse-at", "none", "--batch-size", "40",
            "--policy", "selective_backprop", "--sb-keep", "0.5", "--sb-start", "2", "--no-progress", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    # 240 samples, 6 batches of 40: epoch 1 whole; then interrupt 2 makes batches 2, 4, 6 whole, 1, 3, 5 select 20
    assert [r["samples_backprop"] for r in rows] == [240, 180, 180, 180]
    assert [r["step_equivalents"] for r in rows] == [240] + [180 + 120 * FORWARD_COST] * 3
    assert summary["compute_fraction"] == 1.0  # every sample is forwarded and recorded
    assert summary["backprop_fraction"] == pytest.approx(780 / 960)
    assert summary["step_equivalent_fraction"] == pytest.approx((780 + 360 * FORWARD_COST) / 960)
    assert main(args + ["--out", str(tmp_path / "b"), "--stop-after", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert resumed["final_test_top1"] == summary["final_test_top1"]
    assert resumed["step_equivalent_fraction"] == summary["step_equivalent_fraction"]


def test_the_policies_pages_own_loop_block_runs_as_written():
    from test_library_api import readme_block, user_namespace

    ns = user_namespace(n=64)
    ns["train_set"] = torch.utils.data.TensorDataset(torch.randn(64, 8), torch.randint(0, 3, (64,)))
    exec(readme_block("spent.append(dap.policy.take_counts())"), ns)
    dap = ns["dap"]
    assert dap.done and dap.samples_per_epoch == [64] * 4  # every sample forwarded and recorded
    # 4 batches of 16 an epoch: batches 0 and 2 back-propagate 8 of 16, 1 and 3 (the interrupt) all 16
    assert ns["spent"] == [{"samples_backprop": 48, "step_equivalents": 48 + FORWARD_COST * 32}] * 4


def test_two_processes_count_every_ranks_batches_and_resume_to_the_uninterrupted_run(tmp_path):
    from droppick.data.in_memory import make_fake_fashion_mnist
    from droppick.train.rundir import RunDir

    data = make_fake_fashion_mnist(tmp_path / "data", n_train=237, n_test=40, seed=0)  # odd: padded shards
    args = ["-m", "droppick.cli.main", "train", "--data-dir", str(data), "--model", "small_cnn", "--epochs", "3",
            "--reuse-at", "none", "--batch-size", "40", "--policy", "selective_backprop", "--sb-keep", "0.3",
            "--sb-start", "2", "--device", "cpu", "--no-progress"]
    straight = torchrun(args + ["--out", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]

    # Each rank trains ceil(237 / 2) = 119 samples (rank 1's shard padded by one), in batches of 40, 40
    # and 39. Epoch 1 trains whole; from epoch 2 batches 0 and 2 select int(0.3 x n), batch 1 (every
    # second, the interrupt) trains whole.
    shard = math.ceil(237 / 2)
    sizes = [min(40, shard - start) for start in range(0, shard, 40)]
    assert sizes == [40, 40, 39]
    sb = SelectiveBackprop(keep=0.3, start=2)
    expected = []
    for epoch in (1, 2, 3):
        selecting = [n for b, n in enumerate(sizes) if sb.selects(epoch, b)]
        back = sum(max(1, int(0.3 * n)) for n in selecting) + sum(sizes) - sum(selecting)
        expected.append((2 * back, 2 * (back + FORWARD_COST * sum(selecting))))  # both ranks alike
    assert [e[0] for e in expected] == [238, 2 * (12 + 40 + 11), 2 * (12 + 40 + 11)]
    rows = RunDir(tmp_path / "straight").read_metrics()
    assert [r["samples_backprop"] for r in rows] == [e[0] for e in expected]
    assert [r["step_equivalents"] for r in rows] == pytest.approx([e[1] for e in expected], abs=1e-9)
    assert [r["samples_seen"] for r in rows] == [237] * 3  # every sample forwarded and recorded, once

    stopped = torchrun(args + ["--out", str(tmp_path / "resumed"), "--stop-after", "2"])
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    resumed = torchrun(["-m", "droppick.cli.main", "train", "--resume", str(tmp_path / "resumed"), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summaries = [json.loads(RunDir(tmp_path / run).summary_path.read_text()) for run in ("straight", "resumed")]
    for key in ("final_test_top1", "backprop_fraction", "step_equivalent_fraction", "world_size"):
        assert summaries[0][key] == summaries[1][key], key
    timeless = [[{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in RunDir(tmp_path / run).read_metrics()]
                for run in ("straight", "resumed")]
    assert timeless[0] == timeless[1]
    final = [RunDir(tmp_path / run).latest_checkpoint()["model"] for run in ("straight", "resumed")]
    assert all(torch.equal(final[0][key], final[1][key]) for key in final[0])


@pytest.mark.parametrize("shard_state", [False, True])
def test_a_score_other_than_the_loss_is_refused_where_it_would_be_recorded_and_never_used(shard_state, capsys, tmp_path):
    schedule = DaPSchedule(epochs=4, warmup=1, interval=1, keep=0.5)
    with pytest.raises(ValueError, match="ranks each batch by its loss.*remove --score"):
        DropAndPick(100, schedule, policy="selective_backprop", score="el2n", shard_state=shard_state)
    assert DropAndPick(100, schedule, policy="selective_backprop", shard_state=shard_state).score == "loss"
    assert DropAndPick(100, schedule, policy="dap", score="el2n", shard_state=shard_state).score == "el2n"
    if not shard_state:  # the command line refuses before it writes anything
        assert main(["train", "--policy", "selective_backprop", "--score", "margin", "--out", str(tmp_path / "r")]) == 2
        assert "rank by margin with --policy dap" in capsys.readouterr().err and not (tmp_path / "r").exists()
