"""Outgrowing one machine: --auto-resume, torchrun restarts, another world size, two nodes.

Every run here is the real CLI on a tiny fake Fashion-MNIST (237 images: odd, so shards are
padded). The two-process reference run is trained once per module and compared with each way
of getting to the same end.
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from launch import TIMEOUT_S, free_port, run_group, torchrun

TRAIN = ["--model", "small_cnn", "--epochs", "4", "--warmup", "1", "--interval", "1", "--keep", "0.6",
         "--reuse-at", "3", "--batch-size", "32", "--device", "cpu", "--no-progress", "--lr-schedule", "cosine"]
TIMINGS = ("epoch_seconds", "eval_seconds", "wall_seconds", "train_seconds")


def without_timings(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMINGS}


def metrics(run) -> list[dict]:
    from droppick.train.rundir import RunDir

    return [without_timings(r) for r in RunDir(run).read_metrics()]


def assert_same_final_weights(a, b):
    from droppick.train.rundir import RunDir

    first, second = RunDir(a).latest_checkpoint(), RunDir(b).latest_checkpoint()
    assert first["epoch"] == second["epoch"] == 4
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from droppick.data.in_memory import make_fake_fashion_mnist

    return make_fake_fashion_mnist(tmp_path_factory.mktemp("elastic") / "data", n_train=237, n_test=40, seed=0)


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """The uninterrupted two-process run every other route is compared with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = torchrun(["-m", "droppick.cli", "train", "--data-dir", str(data), *TRAIN, "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# -- --auto-resume in one process -------------------------------------------------------------------

def test_auto_resume_starts_continues_finishes_and_refuses_what_is_not_this_run(data, tmp_path, capsys):
    from droppick.cli.main import main
    from droppick.train.rundir import RunDir

    out = tmp_path / "run"
    args = ["train", "--data-dir", str(data), *TRAIN, "--out", str(out), "--auto-resume"]
    assert main(args + ["--stop-after", "2"]) == 0  # a new directory: the run starts
    assert [p.name for p in RunDir(out).checkpoints()] == ["checkpoint-0001.pt", "checkpoint-0002.pt"]
    assert "continue with: the same command line (--auto-resume)" in capsys.readouterr().out

    # The killed process's lock (same host, a PID that is no longer alive) is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0.0}
    (out / ".lock").write_text(json.dumps(lock))
    assert main(args) == 0  # the same command line continues it
    err = capsys.readouterr().err
    assert f"resuming {out} at epoch 3 from checkpoint-0002.pt" in err
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == [1, 2, 3, 4]
    summary = json.loads(RunDir(out).summary_path.read_text())
    assert summary["world_size_changes"] == []

    assert main(args) == 0  # finished: nothing is trained again, the summary stays as it was
    assert "holds this run, finished: nothing to train" in capsys.readouterr().err
    assert json.loads(RunDir(out).summary_path.read_text()) == summary
    for path in RunDir(out).checkpoints():  # cleaned up after the run: still finished, not trained again
        path.unlink()
    assert main(args) == 0 and "holds this run, finished" in capsys.readouterr().err
    assert json.loads(RunDir(out).summary_path.read_text()) == summary

    assert main(args[:-1] + ["--keep", "0.5", "--auto-resume"]) == 2  # another run's directory
    assert f"{out} holds another run: its config.json has keep=0.6 (this command: 0.5)" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["train", "--data-dir", str(data), *TRAIN, "--out", str(foreign), "--auto-resume"]) == 2
    assert f"{foreign} is not empty (it holds notes.txt)" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    assert main(args + ["--resume", str(out)]) == 2
    assert "--resume and --auto-resume exclude each other" in capsys.readouterr().err


def test_auto_resume_restarts_a_run_that_died_before_its_first_checkpoint(data, tmp_path):
    from droppick.cli.main import main
    from droppick.train.rundir import RunDir

    out, again = tmp_path / "run", tmp_path / "again"
    args = ["train", "--data-dir", str(data), *TRAIN, "--epochs", "2", "--reuse-at", "none"]
    assert main(args + ["--out", str(out), "--stop-after", "1"]) == 0
    for path in RunDir(out).checkpoints():  # as if killed during epoch 1: config and metrics, no checkpoint
        path.unlink()
    assert main(args + ["--out", str(out), "--auto-resume"]) == 0
    assert main(args + ["--out", str(again)]) == 0
    assert metrics(out) == metrics(again)


# -- torchrun: restarts, world sizes, nodes ---------------------------------------------------------

def test_torchrun_restart_after_a_sigkill_continues_to_the_same_end(data, straight, tmp_path):
    """torchrun --max-restarts 1: rank 0 (the lock holder) is SIGKILLed mid-epoch 3; torchrun stops
    rank 1 and restarts both with the same command line, which resumes from checkpoint 2."""
    out = tmp_path / "run"
    proc = torchrun(["--max-restarts", "1", "-m", "droppick.cli", "train", "--data-dir", str(data), *TRAIN,
                     "--out", str(out), "--auto-resume"],
                    DROPPICK_TEST_KILL_AT="epoch:3:batch:2", DROPPICK_TEST_KILL_RANK="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failed (exitcode: -9) local_rank: 0" in proc.stderr  # a real SIGKILL, not a clean exit
    assert f"resuming {out} at epoch 3 from checkpoint-0002.pt" in proc.stderr
    assert metrics(out) == metrics(straight)
    assert_same_final_weights(out, straight)


def stop_after_one_epoch_then_resume(first: list[str], then: list[str], out):
    """Train epoch 1 with ``first`` (a launcher), resume the rest with ``then``; returns the
    checkpointed subset of epoch 1 (what epoch 2 must train) and the resume's stderr."""
    from droppick.train.rundir import RunDir
    from droppick.distributed import subset_sha256

    started = run_group(first + ["--out", str(out), "--stop-after", "1"], env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert started.returncode == 0, started.stderr[-3000:]
    decided = subset_sha256(RunDir(out).latest_checkpoint()["dap"]["subset"])
    resumed = run_group(then + ["--resume", str(out)], env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return decided, resumed.stderr


@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_resume_in_another_world_size(data, straight, tmp_path, before, after):
    from droppick.schedule import DaPSchedule
    from droppick.train.config import TrainConfig
    from droppick.train.rundir import RunDir

    def launcher(world):
        run = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_addr",
               "127.0.0.1", "--master_port", str(free_port())] if world > 1 else [sys.executable]
        return run + ["-m", "droppick.cli", "train"]

    out = tmp_path / "run"
    decided, stderr = stop_after_one_epoch_then_resume(
        launcher(before) + ["--data-dir", str(data), *TRAIN], launcher(after) + ["--no-progress"], out)
    assert (f"the world size changed: this run was trained by {before} processes and continues with {after}. "
            f"Epoch 2 trains the subset decided before the stop") in stderr
    rows = RunDir(out).read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["subset_sha256"] == decided
    plan = DaPSchedule(epochs=4, warmup=1, interval=1, keep=0.6, active=None, reuse_at=[3]).plan(237)
    assert [r["samples_seen"] for r in rows] == list(plan.subset_sizes)
    summary = json.loads(RunDir(out).summary_path.read_text())
    assert summary["compute_fraction"] == pytest.approx(plan.compute_fraction, abs=1e-12)
    assert summary["world_size"] == after
    assert summary["world_size_changes"] == [{"epoch": 2, "from": before, "to": after}]
    if before == 2:  # epoch 1 trained exactly as the uninterrupted two-process run's
        assert without_timings(rows[0]) == metrics(straight)[0]
    # Cosine by progress: epoch 2 starts where the first world size's plan had got to (its
    # steps per epoch: ceil(ceil(n / world) / 32)), and the last epoch still decays toward 0.
    steps = [math.ceil(math.ceil(n / before) / 32) for n in plan.subset_sizes]
    lr = TrainConfig().lr
    assert rows[1]["lr"] == pytest.approx(0.5 * lr * (1 + math.cos(math.pi * steps[0] / sum(steps))), rel=1e-12)
    # Epochs 3 and 4 spread the rest over the new world size's steps (epochs 2..4 of its plan).
    new = [math.ceil(math.ceil(n / after) / 32) for n in plan.subset_sizes]
    done = steps[0] / sum(steps)
    for epoch in (3, 4):
        progress = done + (1 - done) * sum(new[1:epoch - 1]) / sum(new[1:])
        assert rows[epoch - 1]["lr"] == pytest.approx(0.5 * lr * (1 + math.cos(math.pi * progress)), rel=1e-12)


def test_two_torchrun_agents_equal_one_agent_with_two_processes(data, straight, tmp_path):
    """The README's two-node command, both nodes on this machine: one process per agent, a c10d
    rendezvous on 127.0.0.1, gloo. The run equals one agent with two processes."""
    from test_readme_commands import two_node_command

    out = tmp_path / "run"
    port = free_port()
    command = two_node_command(nproc_per_node=1, endpoint=f"127.0.0.1:{port}", rdzv_id="test",
                               train=["--data-dir", str(data), *TRAIN, "--out", str(out), "--auto-resume"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    logs = [(tmp_path / f"agent{a}.out", tmp_path / f"agent{a}.err") for a in (0, 1)]
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *command], env=env,
                               stdout=open(o, "w"), stderr=open(e, "w"), start_new_session=True) for o, e in logs]
    # When the run has ended, an agent may still wait in torch elastic's exit barrier if the agent
    # hosting the rendezvous store left first (seen once in ten runs on a loaded machine): that
    # teardown is torch's, so an agent still waiting 60 s after the run ended is stopped, not failed.
    deadline, ended_at = time.monotonic() + TIMEOUT_S, None
    try:
        while any(agent.poll() is None for agent in agents) and time.monotonic() < deadline:
            if ended_at is None and (out / "summary.json").exists() and any(a.poll() is not None for a in agents):
                ended_at = time.monotonic()
            if ended_at is not None and time.monotonic() > ended_at + 60:
                break
            time.sleep(0.5)
    finally:  # neither agent nor its worker outlives the test
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
    assert (out / "summary.json").exists(), "the run did not end"
    outputs = [(o.read_text(), e.read_text()) for o, e in logs]
    for agent, (_, err) in zip(agents, outputs):
        assert agent.returncode in (0, -signal.SIGKILL), err[-3000:]  # -9: stopped above, in the exit barrier
    assert 0 in [agent.returncode for agent in agents]
    assert sum(o.count("final test top-1") for o, _ in outputs) == 1  # one rank 0 over both nodes
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    assert metrics(out) == metrics(straight)
    assert_same_final_weights(out, straight)


def test_schedule_progress_is_steps_done_and_continues_across_a_world_size_change():
    from droppick.train.steps import schedule_progress

    steps = [4, 4, 3, 4]
    assert [schedule_progress(steps, (1, 0.0), e, i) for e, i in [(1, 0), (2, 1), (4, 3)]] == [0 / 15, 5 / 15, 14 / 15]
    # Resumed at epoch 2 in one process: 8 steps an epoch instead of 4 (the shards doubled).
    done = schedule_progress(steps, (1, 0.0), 2, 0)
    more = [8, 8, 5, 8]
    assert schedule_progress(more, (2, done), 2, 0) == done
    assert schedule_progress(more, (2, done), 3, 0) == pytest.approx(done + (1 - done) * 8 / 21)
    assert schedule_progress(more, (2, done), 4, 8) == pytest.approx(1.0)  # one step past the last: the end
