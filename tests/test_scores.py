"""DropAndPick(score=...): EL2N and the margin against a hand computation, their ranking, DaP and the
floor on a toy set against a hand reference, the refusals, resume, the sharded engine and the command line."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from droppick import DaPSchedule, DropAndPick, NonFiniteLossError, Policy
from droppick.scores import SCORES, batch_scores, el2n, margin, register_score

# Drops after epochs 2, 3 and 4: 20 -> 10 (p = 0.5), 10 -> 6 (the floor ceil(0.3 x 20) stops p's 5), 6 -> 6 (no event).
FLOORED = DaPSchedule(epochs=5, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[], min_keep=0.3)
N, C = 20, 4


def softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def hand_el2n(row, target):
    return math.sqrt(sum((p - (c == target)) ** 2 for c, p in enumerate(softmax(row))))


def hand_margin(row, target):
    probs = softmax(row)
    return 1.0 - (probs[target] - max(p for c, p in enumerate(probs) if c != target))


HAND = {"el2n": hand_el2n, "margin": hand_margin}


def toy(epoch):
    """Each epoch's logits for all N samples (seeded by the epoch) and the fixed targets."""
    logits = torch.randn(N, C, generator=torch.Generator().manual_seed(200 + epoch)) * 2
    return logits, torch.arange(N) % C


def test_el2n_and_margin_match_a_hand_computation():
    logits, targets = toy(1)
    for name, fn in (("el2n", el2n), ("margin", margin)):
        got = fn(logits.clone(), targets)
        want = [HAND[name](row, int(t)) for row, t in zip(logits.tolist(), targets)]
        assert got.tolist() == pytest.approx(want, abs=1e-6), name
        assert batch_scores(name, torch.zeros(N), logits, targets).tolist() == pytest.approx(want, abs=1e-6)
    assert el2n(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(math.sqrt(0.5))
    assert margin(torch.tensor([[0.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(1.0)  # margin 0


def test_a_small_margin_ranks_hard_even_where_the_loss_says_otherwise():
    # A: probabilities (0.4, 0.3, 0.3), margin +0.1; B: (0.45, 0.54, 0.01), margin -0.09: B's loss is lower
    # (-log 0.45 < -log 0.4) but it is misclassified, so the margin ranks it harder; C: a sure right answer.
    logits = torch.tensor([[0.4, 0.3, 0.3], [0.45, 0.54, 0.01], [0.98, 0.01, 0.01]]).log()
    targets = torch.zeros(3, dtype=torch.int64)
    losses = F.cross_entropy(logits, targets, reduction="none")
    hardness = margin(logits, targets)
    assert hardness.tolist() == pytest.approx([0.9, 1.09, 0.03], abs=1e-5)
    assert losses.argsort(descending=True).tolist() == [0, 1, 2] and hardness.argsort(descending=True).tolist() == [1, 0, 2]
    schedule = DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.34, active=None, reuse_at=[])  # keeps 1 of 3
    kept = {}
    for score in ("loss", "margin"):
        dap = DropAndPick(3, schedule, score=score)
        for _ in range(2):
            dap.record(torch.arange(3), losses, logits=logits, targets=targets)
            dap.end_epoch()
        kept[score] = dap.subset.tolist()
    assert kept == {"loss": [0], "margin": [1]}


def test_the_two_argument_call_keeps_working_and_loss_ignores_the_keywords():
    schedule = DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[])
    a, b = DropAndPick(8, schedule), DropAndPick(8, schedule, score="loss")
    losses = torch.arange(8.0)
    for _ in range(2):
        a.record(torch.arange(8), losses)
        b.record(torch.arange(8), losses, logits=torch.randn(8, 3), targets=torch.zeros(8, dtype=torch.int64))
        a.end_epoch(), b.end_epoch()
    assert a.score == b.score == "loss" and a.subset.tolist() == b.subset.tolist() == [4, 5, 6, 7]


def test_missing_or_malformed_logits_and_targets_are_refused_naming_the_fix():
    dap = DropAndPick(4, FLOORED, score="el2n")
    idx, losses, logits, targets = torch.arange(4), torch.ones(4), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"record\(\) got no logits and targets: call dap.record\(indices, losses, "
                                         r"logits=logits, targets=targets\)"):
        dap.record(idx, losses)
    with pytest.raises(ValueError, match="got no targets"):
        dap.record(idx, losses, logits=logits)
    with pytest.raises(ValueError, match=r"logits of shape \(batch, classes\) with one row per loss \(4\); got \(4, 3, 1\)"):
        dap.record(idx, losses, logits=logits[..., None], targets=targets)
    with pytest.raises(ValueError, match="targets as class indices.*got torch.float32 of shape"):
        dap.record(idx, losses, logits=logits, targets=targets.float())
    with pytest.raises(ValueError, match="score must be one of loss, el2n, margin"):
        DropAndPick(4, FLOORED, score="entropy")
    with pytest.raises(ValueError, match="at least 2 classes"):
        DropAndPick(4, FLOORED, score="margin").record(idx, losses, logits=logits[:, :1], targets=targets * 0)
    assert dap.losses.isinf().all()  # nothing refused was recorded


@pytest.mark.parametrize("score", ["el2n", "margin"])
@pytest.mark.parametrize("min_keep", [0.0, 0.3])
def test_dap_and_the_floor_keep_the_hardest_by_the_score_as_a_hand_reference_does(score, min_keep):
    schedule = DaPSchedule(epochs=5, warmup=1, interval=1, keep=0.5, active=None, reuse_at=[], min_keep=min_keep)
    dap = DropAndPick(N, schedule, policy="dap", seed=0, score=score)
    subset, sizes, by_loss = list(range(N)), [], list(range(N))
    for epoch in range(1, schedule.epochs + 1):
        logits, targets = toy(epoch)
        assert dap.subset.tolist() == subset, epoch
        sizes.append(len(subset))
        for batch in dap.sampler().indices().split(3):  # the sampler's order, in batches of 3
            dap.record(batch, F.cross_entropy(logits[batch], targets[batch], reduction="none"),
                       logits=logits[batch], targets=targets[batch])
        event = dap.end_epoch()
        if event == "drop":  # the hand reference: keep the k highest hand scores, ties to the lower index
            k = max(max(1, len(subset) // 2), min(len(subset), math.ceil(min_keep * N)))
            hard = {i: HAND[score](logits[i].tolist(), int(targets[i])) for i in subset}
            subset = sorted(sorted(subset, key=lambda i: (-hard[i], i))[:k])
            losses = F.cross_entropy(logits, targets, reduction="none")
            by_loss = sorted(sorted(by_loss, key=lambda i: (-float(losses[i]), i))[:k])
    assert by_loss != subset  # the toy tells the score from the loss: the loss would keep others
    assert sizes == ([20, 20, 10, 6, 6] if min_keep else [20, 20, 10, 5, 2]) == list(schedule.plan(N).subset_sizes)


def test_a_custom_rule_and_a_policy_read_the_recorded_score():
    seen = {}

    class KeepEasiest:
        def select(self, subset, losses, k, generator):
            seen["rule"] = losses.clone()
            return subset[torch.argsort(losses[subset], stable=True)[:k]]

    class Watch(Policy):
        def end_epoch(self, end):
            seen["policy"] = (end.score, end.losses.clone())

    logits, targets = toy(1)
    losses = F.cross_entropy(logits, targets, reduction="none")
    want = [hand_el2n(row, int(t)) for row, t in zip(logits.tolist(), targets)]
    for policy in (KeepEasiest(), Watch()):
        dap = DropAndPick(N, FLOORED, policy=policy, score="el2n")
        for _ in range(2):
            dap.record(torch.arange(N), losses, logits=logits, targets=targets)
            dap.end_epoch()
    assert seen["rule"].tolist() == pytest.approx(want, abs=1e-6)
    assert seen["policy"][0] == "el2n" and seen["policy"][1].tolist() == pytest.approx(want, abs=1e-6)


def test_a_registered_score_ranks_by_name():
    register_score("true_logit_low", lambda logits, targets: -logits.gather(1, targets[:, None]).squeeze(1))
    try:
        with pytest.raises(ValueError, match="is taken"):
            register_score("el2n", el2n)
        logits, targets = toy(1)
        dap = DropAndPick(N, FLOORED, score="true_logit_low")
        dap.record(torch.arange(N), torch.zeros(N), logits=logits, targets=targets)
        assert dap.losses.tolist() == pytest.approx((-logits[torch.arange(N), targets]).tolist())
    finally:
        SCORES.pop("true_logit_low")


def test_a_non_finite_logit_is_a_non_finite_loss():
    logits, targets = toy(1)
    logits[3, 1], logits[7, 0] = float("nan"), float("inf")
    losses = torch.ones(N)  # finite: the logits alone make the score non-finite
    dap = DropAndPick(N, FLOORED, score="margin")
    dap.record(torch.arange(N), losses, logits=logits, targets=targets)
    with pytest.raises(NonFiniteLossError, match=r"indices \[3, 7\]"):
        dap.end_epoch()
    dap = DropAndPick(N, FLOORED, score="el2n", exclude_nonfinite=True)
    dap.record(torch.arange(N), losses, logits=logits, targets=targets)
    assert dap.end_epoch() == "exclude" and dap.last_nonfinite.tolist() == [3, 7]
    assert 3 not in dap.subset.tolist() and dap.subset.numel() == N - 2


def run(dap, epochs, stop=None):
    """Train ``dap`` on the toy logits for its remaining epochs (or until ``stop``, (epoch, batches))."""
    subsets = []
    while not dap.done:
        logits, targets = toy(dap.epoch)
        batches = list(dap.sampler().indices().split(4))
        start = getattr(dap, "_resume_at", 0)
        for b, batch in enumerate(batches[start:], start):
            if stop == (dap.epoch, b):
                return subsets
            dap.record(batch, F.cross_entropy(logits[batch], targets[batch], reduction="none"),
                       logits=logits[batch], targets=targets[batch])
        dap._resume_at = 0
        subsets.append((dap.end_epoch(), dap.subset.tolist()))
    return subsets


@pytest.mark.parametrize("policy", ["dap", "ema", "trusted"])
def test_a_resume_mid_epoch_with_a_non_default_score_is_exact(policy):
    whole = DropAndPick(N, FLOORED, policy=policy, seed=1, score="margin")
    expected = run(whole, FLOORED.epochs)
    first = DropAndPick(N, FLOORED, policy=policy, seed=1, score="margin")
    before = run(first, FLOORED.epochs, stop=(3, 2))  # two batches of epoch 3 recorded
    assert len(before) == 2 and first.epoch == 3
    state = first.state_dict()
    assert state["score"] == "margin"
    resumed = DropAndPick(N, FLOORED, policy=policy, seed=1, score="margin")
    resumed.load_state_dict(state)
    resumed._resume_at = 2
    assert before + run(resumed, FLOORED.epochs) == expected
    assert torch.equal(resumed.loss_stats.loss_sum, whole.loss_stats.loss_sum)


def test_a_state_of_another_score_is_refused_and_an_old_state_is_the_loss():
    state = DropAndPick(N, FLOORED, score="el2n").state_dict()
    with pytest.raises(ValueError, match="made for score='el2n' into one with score='margin'"):
        DropAndPick(N, FLOORED, score="margin").load_state_dict(state)
    with pytest.raises(ValueError, match="made for score='el2n' into one with score='loss'"):
        DropAndPick(N, FLOORED).load_state_dict(state)
    old = DropAndPick(N, FLOORED).state_dict()
    del old["score"]  # saved before scores existed: ranked by the loss
    DropAndPick(N, FLOORED).load_state_dict(old)
    with pytest.raises(ValueError, match="made for score='loss' into one with score='el2n'"):
        DropAndPick(N, FLOORED, score="el2n").load_state_dict(old)


def test_the_sharded_engine_keeps_what_the_unsharded_one_keeps_by_the_score():
    plain = run(DropAndPick(N, FLOORED, policy="dap", seed=2, score="el2n"), FLOORED.epochs)
    sharded = DropAndPick(N, FLOORED, policy="dap", seed=2, score="el2n", shard_state=True)
    got = []
    while not sharded.done:
        logits, targets = toy(sharded.epoch)
        for batch in sharded.sampler().indices().split(4):
            sharded.record(batch, F.cross_entropy(logits[batch], targets[batch], reduction="none"),
                           logits=logits[batch], targets=targets[batch])
        got.append((sharded.end_epoch(), sharded.gather_subset().tolist()))
    assert got == plain
    state = sharded.state_dict()
    assert state["score"] == "el2n"
    with pytest.raises(ValueError, match="made for score='el2n' into one with score='loss'"):
        DropAndPick(N, FLOORED, shard_state=True).load_state_dict(state)
    with pytest.raises(ValueError, match="got no logits"):
        DropAndPick(N, FLOORED, score="margin", shard_state=True).record(torch.arange(4), torch.ones(4))


def test_train_config_and_the_command_line_take_the_score(fake_fashion, tmp_path, capsys):
    from droppick.cli.main import main
    from droppick.train.config import TrainConfig

    with pytest.raises(ValueError, match="score must be one of loss, el2n, margin; got 'entropy'"):
        TrainConfig(score="entropy")
    with pytest.raises(SystemExit):
        main(["train", "--score", "entropy", "--out", str(tmp_path / "unused")])
    assert "invalid choice: 'entropy'" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "3", "--warmup", "1", "--interval", "1",
                 "--keep", "0.5", "--reuse-at", "none", "--batch-size", "64", "--out", str(out), "--no-progress",
                 "--device", "cpu", "--score", "el2n"]) == 0
    assert json.loads((out / "config.json").read_text())["score"] == "el2n"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["subset_size"] for r in rows] == [240, 240, 120]
    [last] = sorted(out.glob("checkpoint-*.pt"))[-1:]
    dap = torch.load(last, weights_only=False)["dap"]
    assert dap["score"] == "el2n"
    stats = dap["loss_stats"]
    means = stats["loss_sum"] / stats["loss_epochs"].clamp(min=1)
    # EL2N lies in [0, sqrt 2]; a 10-class cross-entropy starts near ln 10 = 2.3
    assert int(stats["loss_epochs"].sum()) == 600 and float(means.max()) <= math.sqrt(2) + 1e-6
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0  # finished: the config's score agrees


def test_the_policies_guide_score_block_runs_as_written():
    from test_library_api import readme_block, user_namespace

    ns = user_namespace()
    exec(readme_block("the margin ranked every drop"), ns)
    dap = ns["dap"]
    assert dap.done and dap.score == "margin" and dap.samples_per_epoch == list(dap.plan().subset_sizes)
    assert min(dap.samples_per_epoch) == 18 == math.ceil(0.3 * 60)  # the floor stopped p = 0.5's drops
    assert float(dap.loss_stats.scores().max()) <= 2.0  # the margin's hardness, not a loss


def scores_worker(rank, world, port, out_dir):
    """One gloo rank: both engines under score="margin", recording only this rank's shard."""
    import datetime
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        result = {}
        for shard_state in (False, True):
            dap = DropAndPick(N, FLOORED, seed=2, score="margin", shard_state=shard_state)
            subsets = []
            while not dap.done:
                logits, targets = toy(dap.epoch)
                idx = dap.sampler().indices()  # this rank's shard
                dap.record(idx, F.cross_entropy(logits[idx], targets[idx], reduction="none"), logits=logits[idx],
                           targets=targets[idx])
                event = dap.end_epoch()
                subsets.append((event, (dap.gather_subset() if shard_state else dap.subset).tolist()))
            result[f"sharded={shard_state}"] = subsets
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_keep_what_one_process_keeps_by_the_score(tmp_path):
    from launch import free_port, spawn

    spawn(scores_worker, (2, free_port(), str(tmp_path)), nprocs=2)
    expected = run(DropAndPick(N, FLOORED, seed=2, score="margin"), FLOORED.epochs)
    assert [size for size in (len(s) for _, s in expected)] == [20, 10, 6, 6, 6]
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert result["sharded=False"] == expected == result["sharded=True"], rank
