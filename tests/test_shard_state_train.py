"""``droppick train --shard-state`` (issue 33): the trainer on sharded DaP state, against the same
run without it.

Every run is the real CLI on a tiny fake Fashion-MNIST (237 images: odd, so the shards are padded)
in two gloo processes under torchrun; four launches for the module: the unsharded reference, the
sharded run, and a sharded run SIGKILLed in the middle of epoch 3 and its resume. A copy of the
killed run's directory (two ranks' shards after epoch 2) is resumed in one process.
"""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from launch import torchrun

TRAIN = ["--model", "small_cnn", "--epochs", "4", "--warmup", "1", "--interval", "1", "--keep", "0.6",
         "--reuse-at", "3", "--batch-size", "32", "--device", "cpu", "--no-progress", "--label-noise", "0.2"]
N = 237


def metrics(run) -> list[dict]:
    from droppick.train.rundir import RunDir

    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in RunDir(run).read_metrics()]


def shard_files(run) -> list[str]:
    return sorted(p.name for p in run.glob("dap-shard-*.pt"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from droppick.data.in_memory import make_fake_fashion_mnist

    root = tmp_path_factory.mktemp("shard-state")
    data = make_fake_fashion_mnist(root / "data", n_train=N, n_test=40, seed=0)
    cli = ["-m", "droppick.cli", "train", "--data-dir", str(data), *TRAIN]
    out = SimpleNamespace(plain=root / "plain", sharded=root / "sharded", killed=root / "killed",
                          alone=root / "alone")
    for run, extra in ((out.plain, []), (out.sharded, ["--shard-state"])):
        proc = torchrun(cli + extra + ["--out", str(run)])
        assert proc.returncode == 0, proc.stderr[-3000:]
    killed = torchrun(cli + ["--shard-state", "--out", str(out.killed)], DROPPICK_TEST_KILL_AT="epoch:3:batch:2")
    assert killed.returncode != 0 and "Signal 9 (SIGKILL)" in killed.stderr, killed.stderr[-3000:]
    shutil.copytree(out.killed, out.alone)  # checkpoint 2 and its two shards, for a resume in one process
    resumed = torchrun(["-m", "droppick.cli", "train", "--resume", str(out.killed), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return out


def test_sharded_state_trains_what_the_whole_state_trains(runs):
    from droppick.report.suspects import load_trainer
    from droppick.train.rundir import RunDir

    plain, sharded = metrics(runs.plain), metrics(runs.sharded)
    assert sharded == plain  # subset sizes, class and wrong-label counts, subset_sha256, compute, events, losses, accuracies
    assert plain[0]["subset_wrong_labels"] == round(0.2 * N) and 0 <= plain[2]["subset_wrong_labels"] <= 142
    assert [r["event"] for r in plain] == [None, "drop", "pick", None]
    assert plain[2]["subset_size"] == 142 and plain[2]["subset_sha256"] != plain[1]["subset_sha256"]
    a, b = RunDir(runs.plain).latest_checkpoint(), RunDir(runs.sharded).latest_checkpoint()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    summaries = [json.loads((run / "summary.json").read_text()) for run in (runs.plain, runs.sharded)]
    assert summaries[0]["compute_fraction"] == summaries[1]["compute_fraction"]
    assert summaries[0]["samples_seen"] == summaries[1]["samples_seen"]

    # one shard per rank beside each checkpoint kept, which names them instead of holding the DaP state
    assert b["dap"] == {"shard_files": ["dap-shard-0004-0-of-2.pt", "dap-shard-0004-1-of-2.pt"], "world": 2,
                        "num_samples": N}
    assert b["retention"] is None
    assert shard_files(runs.sharded) == [f"dap-shard-000{e}-{r}-of-2.pt" for e in (3, 4) for r in (0, 1)]
    shards = [torch.load(runs.sharded / name, weights_only=True) for name in b["dap"]["shard_files"]]
    assert [s["shard"] for s in shards] == [{"rank": 0, "world": 2, "lo": 0, "hi": 118},
                                            {"rank": 1, "world": 2, "lo": 118, "hi": N}]
    assert torch.equal(torch.cat([s["loss_stats"]["loss_sum"] for s in shards]), a["dap"]["loss_stats"]["loss_sum"])

    # droppick suspects reads the two shards in one process: the same suspects as the unsharded run's
    (whole, _), (resharded, _) = load_trainer(runs.plain), load_trainer(runs.sharded)
    assert all(torch.equal(x, y) for x, y in zip(whole.dap.suspects(20), resharded.dap.suspects(20)))
    from droppick.report.inspection import inspect_run

    with pytest.raises(ValueError, match="was trained with --shard-state, which keeps no retention record"):
        inspect_run(runs.sharded)


def test_a_sharded_run_killed_mid_epoch_resumes_bit_for_bit(runs):
    from droppick.train.rundir import RunDir

    assert metrics(runs.killed) == metrics(runs.sharded)
    a, b = RunDir(runs.sharded).latest_checkpoint(), RunDir(runs.killed).latest_checkpoint()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert shard_files(runs.killed) == shard_files(runs.sharded)
    for name in shard_files(runs.sharded):  # every tensor of every rank's shard
        x, y = (torch.load(run / name, weights_only=True) for run in (runs.sharded, runs.killed))
        assert x["members"].equal(y["members"]) and x["loss_stats"]["loss_sum"].equal(y["loss_stats"]["loss_sum"])
        assert x["samples_per_epoch"] == y["samples_per_epoch"] and x["epoch"] == y["epoch"] == int(name[10:14]) + 1


def test_a_resume_in_one_process_reads_two_ranks_shards_and_trains_the_same_subset(runs, capsys):
    from droppick.cli.main import main
    from droppick.schedule import DaPSchedule

    assert main(["train", "--resume", str(runs.alone), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "the world size changed: this run was trained by 2 processes and continues with 1" in err
    rows, sharded = metrics(runs.alone), metrics(runs.sharded)
    assert rows[:2] == sharded[:2]
    assert rows[2]["subset_sha256"] == sharded[2]["subset_sha256"]  # the subset decided after epoch 2
    plan = DaPSchedule(epochs=4, warmup=1, interval=1, keep=0.6, reuse_at=[3]).plan(N)
    assert [r["subset_size"] for r in rows] == [r["samples_seen"] for r in rows] == list(plan.subset_sizes)
    summary = json.loads((runs.alone / "summary.json").read_text())
    assert summary["world_size_changes"] == [{"epoch": 3, "from": 2, "to": 1}]
    assert summary["compute_fraction"] == pytest.approx(plan.compute_fraction, abs=1e-12)
    assert shard_files(runs.alone) == ["dap-shard-0003-0-of-1.pt", "dap-shard-0004-0-of-1.pt"]  # 2 ranks' gone


def test_a_missing_shard_falls_back_and_a_damaged_one_is_named(runs, tmp_path):
    from droppick.train.dap_state import with_dap_state
    from droppick.train.rundir import RunDir

    run = RunDir(tmp_path / "run")
    shutil.copytree(runs.sharded, run.path)
    (run.path / "dap-shard-0004-1-of-2.pt").unlink()
    path, checkpoint = run.latest_checkpoint_and_path()
    assert path.name == "checkpoint-0003.pt"  # the newest whose shards are all there
    damaged = run.path / "dap-shard-0003-0-of-2.pt"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="dap-shard-0003-0-of-2.pt .* does not match the SHA-256"):
        with_dap_state(run, checkpoint, 0, 1)
    assert with_dap_state(run, checkpoint, 1, 2)["dap"]["shard"]["rank"] == 1  # same world size: its own shard


def test_what_cannot_run_with_sharded_state_is_refused_naming_what_can(tmp_path, capsys):
    from droppick import DaPSchedule, DropAndPick
    from droppick.cli.main import main
    from droppick.policies import POLICIES, build_policy
    from droppick.train.config import SHARD_STATE_POLICIES, TrainConfig

    def runs_sharded(policy):
        try:
            DropAndPick(20, DaPSchedule(epochs=3, warmup=1, interval=1, keep=0.5), shard_state=True,
                        policy=build_policy(policy, labels=torch.arange(20) % 2, target_compute=0.5))
            return True
        except ValueError:
            return False

    assert [p for p in POLICIES if runs_sharded(p)] == [p for p in POLICIES if p in SHARD_STATE_POLICIES]
    for policy, why in (("rs2", "RS2 draws each cycle's random keys"), ("infobatch", "InfoBatch weights every batch"),
                        ("seta", "its decision reads the losses of all N samples")):
        with pytest.raises(ValueError, match=f"shard_state \\(--shard-state\\) cannot run policy '{policy}': {why}"):
            TrainConfig(policy=policy, shard_state=True)
    assert main(["train", "--policy", "rs2", "--shard-state", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot run policy 'rs2'" in err and f"use one of {', '.join(SHARD_STATE_POLICIES)}; or train rs2" in err
    assert not (tmp_path / "run").exists()
    assert TrainConfig(policy="trusted", shard_state=True).shard_state  # and one process is a world of one
