"""Noisy labels: --label-noise injects them (seeded, recorded, train and validation only), and the
engine's suspects ranking, saved exactly in its state, finds them; `droppick suspects` writes it out."""

import csv
import json
import math

import pytest
import torch

from droppick import DaPSchedule, DropAndPick
from droppick.cli.main import main
from droppick.data.noise import FASHION_MNIST_PAIRS, flip_labels
from droppick.train.config import TrainConfig
from droppick.train.splits import build_run_splits


@pytest.mark.parametrize("kind", ["symmetric", "pairs"])
def test_flipping_changes_exactly_the_share_asked_for_and_never_to_the_same_class(kind):
    labels = torch.arange(10).repeat(101)
    noisy, flipped = flip_labels(labels, 0.2, kind, 10, seed=7, pairs=FASHION_MNIST_PAIRS)
    assert flipped.numel() == round(0.2 * 1010) and torch.equal(flipped, flipped.sort().values)
    changed = (noisy != labels).nonzero().squeeze(1)
    assert torch.equal(changed, flipped)  # every flipped label changed, and nothing else
    if kind == "pairs":
        assert torch.equal(noisy[flipped], torch.tensor(FASHION_MNIST_PAIRS)[labels[flipped]])
    else:  # uniform over the other nine classes: each appears, none dominates
        counts = torch.bincount((noisy[flipped] - labels[flipped]) % 10, minlength=10)
        assert counts[0] == 0 and bool((counts[1:] > 5).all())
    again, same = flip_labels(labels, 0.2, kind, 10, seed=7, pairs=FASHION_MNIST_PAIRS)
    assert torch.equal(again, noisy) and torch.equal(same, flipped)
    assert not torch.equal(flip_labels(labels, 0.2, kind, 10, seed=8, pairs=FASHION_MNIST_PAIRS)[1], flipped)


def test_fashion_mnists_pairs_are_partners():
    pairs = torch.tensor(FASHION_MNIST_PAIRS)
    assert torch.equal(pairs[pairs], torch.arange(10)) and pairs[6] == 0  # a shirt becomes a T-shirt, and back


@pytest.mark.parametrize("rate, kind, message", [(1.0, "symmetric", r"label_noise must lie in \[0, 1\)"),
                                                  (float("nan"), "symmetric", "label_noise must lie"),
                                                  (0.1, "uniform", "noise_kind must be one of symmetric, pairs")])
def test_bad_noise_settings_are_refused_by_name(rate, kind, message):
    with pytest.raises(ValueError, match=message):
        flip_labels(torch.arange(4), rate, kind, 4, seed=0)
    with pytest.raises(ValueError, match=message):
        TrainConfig(label_noise=rate, noise_kind=kind)


def test_noise_of_streamed_data_is_refused_with_what_to_do():
    with pytest.raises(ValueError, match="write the noisy labels into the data"):
        TrainConfig(dataset="imagefolder", data_dir="/data", label_noise=0.1)


def test_the_noise_reaches_train_and_validation_but_never_the_test_split(fake_fashion):
    cfg = TrainConfig(data_dir=str(fake_fashion), label_noise=0.25, val_samples=40, seed=3, device="cpu")
    train, val, test = build_run_splits(cfg)
    clean_train, clean_val, clean_test = build_run_splits(TrainConfig.from_dict(cfg.to_dict() | {"label_noise": 0.0}))
    assert train.flipped.numel() + val.flipped.numel() == round(0.25 * 240)
    assert val.flipped.numel() > 0 and torch.equal(test.labels, clean_test.labels) and test.clean_labels is None
    assert bool((train.labels[train.flipped] != train.clean_labels[train.flipped]).all())
    # the held-out split is carved by the noisy labels (nobody has clean ones at tuning time), so its
    # members may differ from the clean run's; the images of the training split keep their clean labels
    assert len(train) == len(clean_train) == 200


def test_suspects_rank_a_sample_whose_loss_stays_high_first_and_survive_a_resume():
    schedule = DaPSchedule(epochs=4, warmup=1, interval=1, keep=0.5, reuse_at=[])
    dap = DropAndPick(num_samples=8, schedule=schedule, seed=0)
    twin = DropAndPick(num_samples=8, schedule=schedule, seed=0)
    for epoch in range(1, 5):
        order = dap.sampler().indices()
        losses = 1.0 / epoch + torch.zeros(order.numel())  # everyone learns ...
        losses[order == 5] = 4.0  # ... but sample 5, whose label is wrong
        losses[order == 2] = 4.0 if epoch == 1 else 0.1  # hard at first, then learnt
        dap.record(order, losses)
        dap.end_epoch()
        if epoch == 2:
            twin.load_state_dict(dap.state_dict())
            resumed_at = epoch
    indices, scores = dap.suspects(3)
    assert indices[0] == 5 and scores[0] == pytest.approx(4.0)
    assert int(dap.loss_stats.loss_epochs[5]) == 4 and int(dap.loss_stats.loss_epochs.max()) == 4
    for epoch in range(resumed_at + 1, 5):  # the twin replays the same epochs from the saved state
        order = twin.sampler().indices()
        losses = 1.0 / epoch + torch.zeros(order.numel())
        losses[order == 5] = 4.0
        losses[order == 2] = 0.1
        twin.record(order, losses)
        twin.end_epoch()
    assert torch.equal(twin.loss_stats.loss_sum, dap.loss_stats.loss_sum)
    assert torch.equal(twin.suspects(8)[0], dap.suspects(8)[0])
    with pytest.raises(ValueError, match="k must be >= 1"):
        dap.suspects(0)


def test_a_noisy_run_records_its_flips_and_suspects_finds_them(fake_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "6", "--warmup", "1", "--interval", "1",
                 "--keep", "0.8", "--reuse-at", "3", "--batch-size", "32", "--label-noise", "0.2", "--val-samples",
                 "40", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    noise = json.loads((out / "label_noise.json").read_text())
    assert len(noise["flipped"]) + len(noise["val_flipped"]) == 48 and TrainConfig.load(out / "config.json").label_noise == 0.2
    # each epoch's metrics count the wrong labels its subset trained: all of them in the warm-up, then those kept
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    flipped = set(noise["flipped"])
    assert rows[0]["subset_wrong_labels"] == len(flipped) and rows[0]["subset_size"] == 200
    dropped = [r for r in rows if r["subset_size"] < 200]
    assert dropped and all(0 <= r["subset_wrong_labels"] <= min(len(flipped), r["subset_size"]) for r in dropped)
    capsys.readouterr()
    assert main(["suspects", str(out), "--top", "20"]) == 0
    printed = capsys.readouterr().out
    with open(out / "suspects.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "given_label", "predicted_label", "score", "epochs_trained"] and len(rows) == 20
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    hits = sum(int(r["index"]) in set(noise["flipped"]) for r in rows)
    assert hits >= 16 and f"{hits} of the top 20 are among the run's {len(noise['flipped'])} flipped" in printed
    assert (out / "suspects.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the flagged count: the samples whose mean loss is above ln 10, a uniform guess's; --top flagged lists them
    from droppick.report.suspects import load_trainer

    stats = load_trainer(out)[0].dap.loss_stats
    flagged = int((stats.scores() > math.log(10)).sum())
    n = len(stats.scores())  # 240 images less the 40 of --val-samples
    assert n == 200 and 0 < flagged < n and f"flagged: {flagged} of the 200 training samples" in printed
    assert main(["suspects", str(out), "--top", "flagged"]) == 0
    with open(out / "suspects.csv") as f:
        assert len(list(csv.DictReader(f))) == flagged
    for bad in ("0", "some"):
        assert main(["suspects", str(out), "--top", bad]) == 2


def test_a_uniform_guess_scores_ln_c_in_loss_and_its_own_value_in_any_score():
    from droppick.scores import register_score, SCORES
    from droppick.suspects import LossStats, uniform_guess

    assert uniform_guess("loss", 10) == pytest.approx(math.log(10))
    assert uniform_guess("el2n", 10) == pytest.approx(math.sqrt(0.9))  # 1 - 1/C off the true class, 1/C on 9 others
    assert uniform_guess("margin", 4) == pytest.approx(1.0)  # a margin of 0
    register_score("test-entropy", lambda logits, targets: -(logits.softmax(1) * logits.log_softmax(1)).sum(1))
    try:
        assert uniform_guess("test-entropy", 8) == pytest.approx(math.log(8))
    finally:
        del SCORES["test-entropy"]
    for bad in (1, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
            uniform_guess("loss", bad)
    with pytest.raises(ValueError, match="score must be one of"):
        uniform_guess("entropy", 10)
    stats = LossStats(4)
    stats.update(torch.tensor([3.0, 1.0, 2.5, 9.0]), torch.tensor([True, True, True, False]))
    assert stats.above(math.log(10)).tolist() == [0, 2]  # 3.0 and 2.5; the unrecorded sample is not counted


def test_the_window_skips_the_hardest_share_and_keeps_the_next():
    from droppick import KeepWindow

    subset = torch.arange(10)
    losses = torch.arange(10, 0, -1).float()  # sample 0 hardest ... 9 easiest
    kept = KeepWindow(0.2).select(subset, losses, 4, torch.Generator())
    assert kept.tolist() == [2, 3, 4, 5]  # the two hardest skipped
    assert KeepWindow(0.5).select(subset, losses, 8, torch.Generator()).tolist() == list(range(2, 10))  # room for 8
    assert KeepWindow(0.0).select(subset, losses, 3, torch.Generator()).tolist() == [0, 1, 2]  # the paper's rule
    with pytest.raises(ValueError, match=r"window skip must be a number in \[0, 1\)"):
        KeepWindow(1.0)


def test_trusted_ranks_the_suspects_last_and_saves_what_it_learnt():
    from droppick import KeepHardestTrusted

    rule = KeepHardestTrusted(0.2)  # 2 of 10 samples
    for epoch in range(3):
        losses = torch.full((10,), 1.0 / (epoch + 1))
        losses[[3, 7]] = 5.0  # wrong labels: high every epoch
        losses[1] = 6.0 if epoch == 2 else 0.5  # hard this epoch only
        rule.observe(losses)
    kept = rule.select(torch.arange(10), losses, 3, torch.Generator())
    assert 3 not in kept and 7 not in kept and 1 in kept
    twin = KeepHardestTrusted(0.2)
    twin.load_state_dict(rule.state_dict())
    assert torch.equal(twin.select(torch.arange(10), losses, 3, torch.Generator()), kept)
    everything = rule.select(torch.arange(10), losses, 10, torch.Generator())  # nothing else left: suspects too
    assert everything.tolist() == list(range(10))


def test_trusted_with_a_threshold_ranks_last_every_sample_whose_mean_is_above_it_however_many():
    from droppick import KeepHardestTrusted

    rule = KeepHardestTrusted(threshold=2.0)  # the share is not used
    for epoch in range(3):
        losses = torch.full((10,), 1.0 / (epoch + 1))
        losses[[2, 3, 7]] = 5.0  # means above 2: three suspects, where a share of 0.1 would name one
        losses[1] = 4.0 if epoch == 2 else 0.5  # mean 1.67: hard this epoch, not suspect
        rule.observe(losses)
    assert rule.suspected().tolist() == [2, 3, 7] and rule.params() == {"trusted_threshold": 2.0}
    kept = rule.select(torch.arange(10), losses, 4, torch.Generator())
    assert kept.tolist() == [0, 1, 4, 5]  # sample 1, then the ties to the lower index; none of 2, 3, 7
    twin = KeepHardestTrusted(threshold=2.0)
    twin.load_state_dict(rule.state_dict())
    assert torch.equal(twin.select(torch.arange(10), losses, 4, torch.Generator()), kept)
    clean = KeepHardestTrusted(threshold=9.0)  # nobody above it: the paper's rule
    clean.observe(losses)
    assert clean.suspected().numel() == 0
    assert clean.select(torch.arange(10), losses, 3, torch.Generator()).tolist() == [2, 3, 7]
    for bad in (float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="trusted threshold must be a finite number"):
            KeepHardestTrusted(threshold=bad)


@pytest.mark.parametrize("policy, flag", [("window", "--window-skip"), ("trusted", "--trusted-share")])
def test_the_noise_rules_train_from_the_command_line_at_the_plans_compute(policy, flag, fake_fashion, tmp_path):
    out = tmp_path / policy
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "4", "--warmup", "1", "--interval", "1",
                 "--keep", "0.7", "--reuse-at", "none", "--batch-size", "64", "--policy", policy, flag, "0.15",
                 "--label-noise", "0.1", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == policy and summary["compute_fraction"] == summary["planned_compute_fraction"] < 1
    assert getattr(TrainConfig.load(out / "config.json"), flag[2:].replace("-", "_")) == 0.15


def test_trusted_suspects_uniform_trains_with_the_uniform_guess_of_its_score_as_threshold(fake_fashion, tmp_path):
    from droppick.report.suspects import load_trainer

    out = tmp_path / "uniform"
    assert main(["train", "--data-dir", str(fake_fashion), "--epochs", "4", "--warmup", "1", "--interval", "1",
                 "--keep", "0.7", "--reuse-at", "none", "--batch-size", "64", "--policy", "trusted", "--score", "margin",
                 "--trusted-suspects", "uniform", "--label-noise", "0.3", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["compute_fraction"] == summary["planned_compute_fraction"] < 1
    rule = load_trainer(out)[0].dap.policy.rule
    assert rule.threshold == 1.0 and rule.params() == {"trusted_threshold": 1.0}  # the margin's uniform guess
    assert TrainConfig.load(out / "config.json").trusted_suspects == "uniform"
    with pytest.raises(ValueError, match="trusted_suspects must be one of share, uniform; got 'auto'"):
        TrainConfig(policy="trusted", trusted_suspects="auto")
