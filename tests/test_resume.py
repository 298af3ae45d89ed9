"""Exact resume: a real `droppick train` process killed with SIGKILL at chosen points, resumed,
ends bit-identical to an uninterrupted run. Plus what a checkpoint holds and its integrity check.

The kills use the trainer's test hook DROPPICK_TEST_KILL_AT (see train/testhook.py): the process
SIGKILLs itself after a given batch or checkpoint, so nothing depends on sleeps or timing.
"""

import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from droppick.train.checkpoint import digest_path, load_checkpoint
from droppick.train.config import TrainConfig
from droppick.train.rundir import RunDir
from droppick.train.trainer import train

# 5 epochs on 240 images: warm-up, drop after epoch 2, pick after 3, drop after 4.
SETTINGS = dict(model="small_cnn", epochs=5, warmup=1, interval=1, keep=0.6, reuse_at=[3], batch_size=32, lr=0.05,
                seed=0, device="cpu")
TRAIN_ARGS = [arg for key, value in SETTINGS.items()
              for arg in (f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list)
                          else str(value))]


def droppick_train(args, kill_at=None):
    env = {k: v for k, v in os.environ.items() if k != "DROPPICK_TEST_KILL_AT"}
    env["OMP_NUM_THREADS"] = "1"  # one thread, as in this process (conftest): bit-reproducible kernels
    if kill_at:
        env["DROPPICK_TEST_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "droppick.cli.main", "train", *args, "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=180)


def without_timings(rows):
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]


def test_sigkill_mid_epoch_and_after_drop_and_pick_checkpoints_resumes_bit_identically(fake_fashion, tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "run"
    # Uninterrupted, in this process (one thread, like the children): saves a process start.
    train(TrainConfig(data_dir=str(fake_fashion), **SETTINGS), straight)
    events = [m["event"] for m in RunDir(straight).read_metrics()]
    assert events[1:3] == ["drop", "pick"]  # so the kill points below are what their names say

    # (a) mid-epoch: killed after batch 3 of epoch 2; epoch 2 is redone from its beginning.
    killed = droppick_train(TRAIN_ARGS + ["--data-dir", str(fake_fashion), "--out", str(run)], "epoch:2:batch:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [m["epoch"] for m in RunDir(run).read_metrics()] == [1]
    # (b) right after the checkpoint of epoch 2, which ended in a drop; (c) of epoch 3, a pick.
    for epoch in (2, 3):
        killed = droppick_train(["--resume", str(run)], f"after_checkpoint:{epoch}")
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
        assert RunDir(run).checkpoints()[-1].name == f"checkpoint-{epoch:04d}.pt"
    resumed = droppick_train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert without_timings(RunDir(run).read_metrics()) == without_timings(RunDir(straight).read_metrics())
    a, b = RunDir(straight).latest_checkpoint(), RunDir(run).latest_checkpoint()
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in ("subset", "losses", "seen"):
        assert torch.equal(a["dap"][key], b["dap"][key]), key
    for key, value in a["retention"].items():  # NaN marks a loss never recorded: equal_nan, else exact
        torch.testing.assert_close(value, b["retention"][key], rtol=0, atol=0, equal_nan=True, msg=key)
    momenta = [(s["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i, s in a["optimizer"]["state"].items()]
    assert momenta and all(torch.equal(x, y) for x, y in momenta)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, run)]
    assert without_timings([summaries[0]]) == without_timings([summaries[1]])


def tiny_config(data_dir, **kw):
    base = dict(data_dir=str(data_dir), model="small_cnn", epochs=3, warmup=1, interval=1, keep=0.6,
                reuse_at=[2], batch_size=64, seed=0, device="cpu")
    return TrainConfig(**(base | kw))


@pytest.fixture
def global_rngs_restored():
    """This test sets global RNG states on purpose; give the next tests back the ones they had."""
    saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
    yield
    torch.set_rng_state(saved[0])
    random.setstate(saved[1])
    np.random.set_state(saved[2])


def test_checkpoint_holds_everything_and_resume_restores_global_rngs(fake_fashion, tmp_path, global_rngs_restored):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = torch.get_rng_state(), random.getstate(), np.random.get_state()
    cfg = tiny_config(fake_fashion)
    train(cfg, tmp_path / "run", stop_after=1)
    checkpoint = RunDir(tmp_path / "run").latest_checkpoint()
    assert set(checkpoint) >= {"format", "config", "epoch", "model", "optimizer", "scaler", "dap", "retention",
                               "world_size", "lr_schedule", "rng", "wall_seconds"}
    assert checkpoint["format"] == 5 and checkpoint["epoch"] == 1 and checkpoint["world_size"] == 1
    steps = [math.ceil(n / cfg.batch_size) for n in cfg.schedule.plan(240).subset_sizes]
    assert checkpoint["lr_schedule"] == {"kind": "step", "planned_steps": steps, "origin": [1, 0.0]}
    assert set(checkpoint["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert torch.equal(checkpoint["rng"]["torch"], expected[0])

    torch.manual_seed(999)
    random.seed(999)
    np.random.seed(999)
    train(None, tmp_path / "run", resume=True)  # droppick draws nothing from them: still the saved ones
    assert torch.equal(torch.get_rng_state(), expected[0])
    assert random.getstate() == expected[1]
    assert np.array_equal(np.random.get_state()[1], expected[2][1])


# -- integrity: size + SHA-256 beside every checkpoint ----------------------------------------------

def write_checkpoints(run_dir, epochs):
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    for epoch in epochs:
        run.save_checkpoint({"epoch": epoch, "weights": torch.arange(1000.0) * epoch}, epoch)
    return run


def test_digest_files_are_written_rotated_and_verified(tmp_path):
    run = write_checkpoints(tmp_path, [1, 2, 3])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-0002.pt", "checkpoint-0002.pt.sha256", "checkpoint-0003.pt", "checkpoint-0003.pt.sha256"]
    newest = run.checkpoints()[-1]
    assert digest_path(newest).read_text() == f"{hashlib.sha256(newest.read_bytes()).hexdigest()}  checkpoint-0003.pt\n"
    check = subprocess.run(["sha256sum", "-c", "checkpoint-0003.pt.sha256"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and "checkpoint-0003.pt: OK" in check.stdout  # the format sha256sum reads
    assert load_checkpoint(newest)["epoch"] == 3


def test_digest_written_as_json_by_older_versions_still_verifies(tmp_path):
    run = write_checkpoints(tmp_path, [1])
    path = run.checkpoints()[0]
    data = path.read_bytes()
    legacy = {"file": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    digest_path(path).write_text(json.dumps(legacy) + "\n")
    assert load_checkpoint(path)["epoch"] == 1
    path.write_bytes(data[:-1])
    with pytest.raises(ValueError, match="does not match the SHA-256 .* truncated or corrupt"):
        load_checkpoint(path)


def test_flipped_byte_is_a_clear_error_and_auto_resume_falls_back(tmp_path):
    run = write_checkpoints(tmp_path, [1, 2])
    newest = run.checkpoints()[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed: only the hash can tell
    newest.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoint-0002\.pt \(\d+ bytes\) does not match the SHA-256 in "
                                         r"checkpoint-0002\.pt\.sha"):
        load_checkpoint(newest)
    assert run.latest_checkpoint()["epoch"] == 1

    newest.write_bytes(bytes(data[:100]))
    with pytest.raises(ValueError, match=r"checkpoint-0002\.pt \(100 bytes\) does not match .* truncated or corrupt"):
        load_checkpoint(newest)
    oldest = run.checkpoints()[0]
    oldest.write_bytes(oldest.read_bytes()[:-1])
    with pytest.raises(ValueError, match="no readable checkpoint in .*checkpoint-0002.*checkpoint-0001"):
        run.latest_checkpoint()


def test_checkpoint_without_digest_loads_unverified(tmp_path):
    run = write_checkpoints(tmp_path, [1])
    digest_path(run.checkpoints()[0]).unlink()  # e.g. copied alone
    assert load_checkpoint(run.checkpoints()[0])["epoch"] == 1


def test_metrics_line_cut_short_by_a_crash_is_ignored(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"epoch": 1, "x": 1})
    with open(run.metrics_path, "a") as f:
        f.write('{"epoch": 2, "x"')  # killed mid-append
    assert run.read_metrics() == [{"epoch": 1, "x": 1}]
    assert run.truncate_metrics(before_epoch=2) == [{"epoch": 1, "x": 1}]
    assert run.metrics_path.read_text() == '{"epoch": 1, "x": 1}\n'


@pytest.mark.parametrize("text,message", [
    ("", "holds no SHA-256"),
    ("   \n", "holds no SHA-256"),
    ("0x1234  checkpoint-0001.pt\n", "holds no SHA-256"),
    (b"\xff\xfe", "is unreadable"),
])
def test_a_broken_digest_file_is_named_not_blamed_on_the_checkpoint(tmp_path, text, message):
    run = write_checkpoints(tmp_path, [1])
    sidecar = digest_path(run.checkpoints()[0])
    sidecar.write_bytes(text if isinstance(text, bytes) else text.encode())
    # The message names the digest file, not the checkpoint, as what is broken.
    with pytest.raises(ValueError, match=rf"^checkpoint-0001\.pt: its digest file \S*/checkpoint-0001\.pt\.sha256 {message}"):
        load_checkpoint(run.checkpoints()[0])


def test_upper_case_and_binary_mode_digests_verify(tmp_path):
    run = write_checkpoints(tmp_path, [1])
    path = run.checkpoints()[0]
    digest_path(path).write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest().upper()} *{path.name}\n")
    assert load_checkpoint(path)["epoch"] == 1


def test_a_checkpoint_of_droppick_0_1_is_refused_naming_its_format(fake_fashion, tmp_path):
    from droppick import DropAndPick

    train(tiny_config(fake_fashion), tmp_path / "run", stop_after=1)
    run = RunDir(tmp_path / "run")
    state = run.latest_checkpoint()
    state["format"], state["dap"]["format"] = 3, 2  # what droppick 0.1.0 wrote
    run.save_checkpoint(state, 1)
    with pytest.raises(ValueError, match="checkpoint format 3 is not 5; it was written by another droppick version"):
        train(None, tmp_path / "run", resume=True)
    cfg = tiny_config(fake_fashion)
    dap = DropAndPick(state["dap"]["num_samples"], cfg.schedule, policy=cfg.policy)
    with pytest.raises(ValueError, match=r"DropAndPick state has format 2; this version reads format 4 "
                                         r"\(format 3 is droppick 0.2's, 2 is 0.1's\)"):
        dap.load_state_dict(state["dap"])


@pytest.mark.parametrize("policy", ["rs2", "epsilon", "ema"])
def test_a_run_of_a_policy_beyond_the_paper_stopped_and_resumed_equals_the_straight_one(policy, fake_fashion,
                                                                                       tmp_path):
    """Stopped after epoch 2 (a drop for epsilon and ema; rs2 mid-permutation) and resumed: the same
    subsets, metrics, model and policy state (the EMA, RS2's permutation and position)."""
    cfg = TrainConfig(data_dir=str(fake_fashion), **dict(SETTINGS, policy=policy))
    straight, run = tmp_path / "straight", tmp_path / "run"
    train(cfg, straight)
    assert train(cfg, run, stop_after=2) is None
    train(None, run, resume=True)
    assert without_timings(RunDir(run).read_metrics()) == without_timings(RunDir(straight).read_metrics())
    a, b = RunDir(straight).latest_checkpoint(), RunDir(run).latest_checkpoint()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["dap"]["policy_state"].keys() == b["dap"]["policy_state"].keys()
    for key, value in a["dap"]["policy_state"].items():
        other = b["dap"]["policy_state"][key]
        assert torch.equal(value, other) if torch.is_tensor(value) else value == other, key
