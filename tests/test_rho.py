"""Policy rho (issue 32): RHO-LOSS's reducible loss, the loss less a holdout model's, at DaP's drops. The rule
against a hand reference, its conventions, its state and resume, its refusals, and `droppick train --policy rho`."""

import io
import json

import pytest
import torch

from droppick import DaPSchedule, DropAndPick, KeepHardest, KeepHighestReducible
from droppick.cli.main import main
from droppick.policies.selective_backprop import FORWARD_COST
from droppick.train.config import TrainConfig


def hand_reference(subset, losses, irreducible, k):
    """The k members of the highest loss - irreducible (float32, as the engine holds them), ties to the lower index."""
    reducible = (losses - irreducible).tolist()
    return sorted(sorted(subset.tolist(), key=lambda i: (-reducible[i], i))[:k])


def test_rho_keeps_the_highest_reducible_loss_where_dap_keeps_the_highest_loss():
    losses = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    irreducible = torch.tensor([4.9, 0.1, 2.9, 0.1, 0.1, 0.1, 0.1, 0.1])  # 0 and 2: high for the holdout model too
    rule = KeepHighestReducible(irreducible)
    assert rule.select(torch.arange(8), losses, 3, torch.Generator()).tolist() == [1, 3, 4]
    assert KeepHardest().select(torch.arange(8), losses, 3, torch.Generator()).tolist() == [0, 1, 2]  # dap: they stay
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        n = 50
        # quarters, exact in float32: many equal reducible losses, from equal and from unequal losses
        losses, irreducible = (torch.rand(n, generator=gen) * 12).round() / 4, (torch.rand(n, generator=gen) * 8).round() / 4
        subset = torch.randperm(n, generator=gen)[: 30].sort().values
        k = 1 + trial
        kept = KeepHighestReducible(irreducible).select(subset, losses, k, torch.Generator())
        assert kept.tolist() == hand_reference(subset, losses, irreducible, k)


def test_an_unrecorded_member_is_kept_first_a_non_finite_one_last_and_ties_go_to_the_lower_index():
    rule = KeepHighestReducible(torch.tensor([0.0, 0.0, 1.0, 0.0, 2.0, 1.0]))
    losses = torch.tensor([1.0, float("inf"), 2.0, float("-inf"), 3.0, 2.0])  # reducible 1, inf, 1, -inf, 1, 1
    assert rule.select(torch.arange(6), losses, 2, torch.Generator()).tolist() == [0, 1]
    assert rule.select(torch.arange(6), losses, 3, torch.Generator()).tolist() == [0, 1, 2]
    assert rule.select(torch.arange(6), losses, 5, torch.Generator()).tolist() == [0, 1, 2, 4, 5]
    assert rule.select(torch.arange(6), losses, 6, torch.Generator()).tolist() == list(range(6))
    assert rule.select(torch.tensor([2, 3, 5]), losses, 1, torch.Generator()).tolist() == [2]


def epoch_losses(order, epoch):
    return (torch.sin(order.double() * 1.3 + epoch) + 1.5).float()


def run_epochs(dap, epochs):
    subsets = []
    for _ in range(epochs):
        order = dap.sampler().indices()
        dap.record(order, epoch_losses(order, dap.epoch))
        dap.end_epoch()
        subsets.append(dap.subset.tolist())
    return subsets


def test_the_irreducible_losses_are_the_rules_state_saved_and_restored_exactly_for_a_resume():
    schedule = DaPSchedule(epochs=9, warmup=1, interval=1, keep=0.7, reuse_at=[5])
    irreducible = torch.linspace(0.0, 2.0, 30)
    dap = DropAndPick(30, schedule, policy=KeepHighestReducible(irreducible), seed=5)
    first = run_epochs(dap, 3)
    buffer = io.BytesIO()
    torch.save(dap.state_dict(), buffer)
    buffer.seek(0)
    twin = DropAndPick(30, schedule, policy="rho", seed=5)  # by name: the losses come from the state
    twin.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(twin.policy.rule.irreducible, irreducible) and twin.policy.rule.irreducible.dtype == torch.float32
    assert run_epochs(twin, 6) == run_epochs(dap, 6)
    assert dap.done and twin.done and twin.samples_per_epoch == dap.samples_per_epoch
    plain = DropAndPick(30, schedule, seed=5)
    assert run_epochs(plain, 3)[1:] != first[1:]  # the same losses, another subset than dap's
    unset = KeepHighestReducible()
    unset.load_state_dict(KeepHighestReducible().state_dict())
    assert unset.irreducible is None


def test_rho_refuses_to_drop_without_irreducible_losses_or_with_the_wrong_number():
    schedule = DaPSchedule(epochs=4, warmup=1, interval=1, keep=0.5, reuse_at=[])
    with pytest.raises(RuntimeError, match=r"call rule.set_irreducible\(losses\).*--val-samples"):
        run_epochs(DropAndPick(10, schedule, policy="rho"), 2)  # the first drop: after epoch 2
    with pytest.raises(ValueError, match="rho holds 5 irreducible losses, but the engine has 10 samples"):
        run_epochs(DropAndPick(10, schedule, policy=KeepHighestReducible(torch.zeros(5))), 2)
    dap = DropAndPick(10, schedule, policy="rho")
    dap.policy.rule.set_irreducible(torch.zeros(10, dtype=torch.float64))  # the other way to give them
    run_epochs(dap, 2)
    with pytest.raises(ValueError, match=r"must be finite; samples \[2\]"):
        KeepHighestReducible(torch.tensor([0.0, 1.0, float("nan")]))
    with pytest.raises(ValueError, match="1-D tensor of one loss per training sample"):
        KeepHighestReducible(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="rho's irreducible losses are one float32"):
        DropAndPick(10, schedule, policy=KeepHighestReducible(torch.zeros(10)), shard_state=True)


def test_the_trainer_refuses_rho_without_a_validation_split_naming_the_flag(tmp_path, capsys):
    with pytest.raises(ValueError, match="hold one out with --val-samples V"):
        TrainConfig(policy="rho")
    with pytest.raises(ValueError, match="rho_epochs must be >= 1"):
        TrainConfig(policy="rho", val_samples=10, rho_epochs=0)
    with pytest.raises(ValueError, match="cannot run policy 'rho': rho's irreducible losses"):
        TrainConfig(policy="rho", val_samples=10, shard_state=True)
    assert TrainConfig(policy="rho", cv_folds=5).policy == "rho"
    assert main(["train", "--policy", "rho", "--out", str(tmp_path / "run")]) == 2
    assert "--val-samples" in capsys.readouterr().err and not (tmp_path / "run").exists()


TIMING = ("epoch_seconds", "eval_seconds", "holdout_seconds")


def test_a_rho_run_trains_its_holdout_once_reports_its_compute_and_resumes_exactly(fake_fashion, tmp_path, monkeypatch):
    args = ["train", "--data-dir", str(fake_fashion), "--epochs", "5", "--warmup", "1", "--interval", "1", "--keep", "0.7",
            "--reuse-at", "4", "--batch-size", "64", "--policy", "rho", "--val-samples", "40", "--rho-epochs", "2",
            "--label-noise", "0.1", "--no-progress", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert (summary["holdout_samples"], summary["holdout_forward"], summary["num_train_samples"]) == (80, 200, 200)
    assert summary["compute_fraction"] == summary["planned_compute_fraction"] < 1  # the schedule's, as dap's
    assert summary["step_equivalent_fraction"] == pytest.approx((summary["samples_seen"] + 80 + 200 * FORWARD_COST)
                                                                / (5 * 200))
    assert (rows[0]["holdout_samples"], rows[0]["holdout_forward"]) == (80, 200) and rows[0]["holdout_seconds"] > 0
    assert all("holdout_samples" not in r for r in rows[1:]) and any(r["event"] == "drop" for r in rows)
    il = torch.load(tmp_path / "a" / "checkpoint-0005.pt", weights_only=True)["dap"]["policy_state"]["irreducible"]
    assert il.shape == (200,) and il.dtype == torch.float32 and bool(torch.isfinite(il).all())

    assert main(args + ["--out", str(tmp_path / "b"), "--stop-after", "2"]) == 0

    def retrain(t):
        raise AssertionError("a resumed rho run trained its holdout model again")

    monkeypatch.setattr("droppick.train.trainer.fit_irreducible", retrain)
    assert main(["train", "--resume", str(tmp_path / "b"), "--no-progress"]) == 0
    resumed = json.loads((tmp_path / "b" / "summary.json").read_text())
    again = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in TIMING} for r in again] == [
        {k: v for k, v in r.items() if k not in TIMING} for r in rows]
    for key in ("final_test_top1", "final_val_top1", "step_equivalent_fraction", "holdout_samples", "samples_seen"):
        assert resumed[key] == summary[key], key
    assert torch.equal(torch.load(tmp_path / "b" / "checkpoint-0005.pt", weights_only=True)["dap"]["policy_state"][
        "irreducible"], il)


def test_the_noisy_labels_own_loop_block_runs_as_written():
    from test_library_api import readme_block, user_namespace

    ns = user_namespace()
    exec(readme_block("policy=KeepHighestReducible(irreducible)"), ns)
    dap, irreducible = ns["dap"], ns["irreducible"]
    assert irreducible.shape == (40,) and dap.num_samples == 40
    event = None
    while event != "drop":  # the warm-up, then the epoch whose losses the first drop reads
        losses = torch.rand(40, generator=torch.Generator().manual_seed(dap.epoch))
        order = dap.sampler().indices()
        dap.record(order, losses[order])
        event = dap.end_epoch()
    assert dap.subset.tolist() == hand_reference(torch.arange(40), losses, irreducible, 32)  # keep 0.8 of 40
    assert dap.subset.tolist() != torch.sort(torch.topk(losses, 32).indices).values.tolist()


def test_the_holdout_is_the_same_on_every_rank_and_the_ranks_shares_make_the_whole(fake_fashion, monkeypatch):
    """Under torchrun every rank trains the same holdout model and scores every world-th sample; the gathered
    shares put each loss where one process puts it (the gather simulated: two ranks of one process)."""
    from droppick.train import irreducible
    from droppick.train.trainer import Trainer

    cfg = TrainConfig(data_dir=str(fake_fashion), policy="rho", val_samples=40, rho_epochs=1, batch_size=64,
                      label_noise=0.1, device="cpu")
    t = Trainer(cfg, torch.device("cpu"))
    model = irreducible._train_holdout(t)
    again = irreducible._train_holdout(t)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    whole = irreducible._score(t, model)
    shares = []
    monkeypatch.setattr(irreducible.distributed, "all_gather_uneven", lambda share: shares.append(share) or [share])
    for rank in (0, 1):
        t.rank, t.world = rank, 2
        irreducible._score(t, model)
    assert [s.numel() for s in shares] == [100, 100]
    monkeypatch.setattr(irreducible.distributed, "all_gather_uneven", lambda share: shares)
    assert torch.equal(irreducible._score(t, model), whole)
    assert torch.equal(shares[1], whole[1::2])
