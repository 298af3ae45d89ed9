"""Selective Backprop: which batches select, what a selection draws, what a run reports it spent,
and that a stopped run resumes to the same result."""

import json

import pytest
import torch

from droppick.cli.main import main
from droppick.policies.selective_backprop import FORWARD_COST, SelectiveBackprop


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
    exec(readme_block("dap.policy.selects(dap.epoch, batch)"), ns)
    dap = ns["dap"]
    assert dap.done and dap.samples_per_epoch == [64] * 4  # every sample forwarded and recorded
    assert dap.policy.take_counts()["samples_backprop"] > 0  # the last epoch's draws were counted
