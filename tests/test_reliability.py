"""Faults survived: a foreign directory, two processes on one run, a full disk, pickles that run code."""

import errno
import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch

from droppick.cli.main import main
from droppick.train.lock import LOCK_NAME, RunLock
from droppick.train.rundir import RunDir


def tiny_args(data, out, *extra):
    return ["train", "--data-dir", str(data), "--epochs", "3", "--warmup", "1", "--keep", "0.5", "--reuse-at", "none",
            "--batch-size", "64", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


# -- run-directory safety ----------------------------------------------------------------------

def test_a_directory_holding_foreign_files_is_refused_and_left_byte_identical(fake_fashion, tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"mine": true}\n')  # the user's own config, not a run's
    (project / "notes.txt").write_bytes(b"\x00\x01 keep me")
    before = {p.name: p.read_bytes() for p in project.iterdir()}
    assert main(tiny_args(fake_fashion, project)) == 2
    err = capsys.readouterr().err
    assert f"{project} is not empty (it holds config.json, notes.txt)" in err and "new or empty directory" in err
    assert {p.name: p.read_bytes() for p in project.iterdir()} == before


def test_an_empty_directory_is_accepted(fake_fashion, tmp_path):
    (tmp_path / "run").mkdir()
    assert main(tiny_args(fake_fashion, tmp_path / "run")) == 0
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released at the end


def test_a_second_process_on_the_same_run_is_refused_naming_the_holder(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(fake_fashion, run, "--stop-after", "1")) == 0
    with RunLock(run):  # this process holds it, as a first `train --resume` would
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by process {os.getpid()} on host {socket.gethostname()}" in err
    assert len(RunDir(run).read_metrics()) == 1  # the refused process wrote nothing


def test_a_stale_lock_of_a_dead_process_is_taken_over(fake_fashion, tmp_path):
    run = tmp_path / "run"
    assert main(tiny_args(fake_fashion, run, "--stop-after", "1")) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its PID now names no process
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert len(RunDir(run).read_metrics()) == 3 and not (run / LOCK_NAME).exists()


def test_a_lock_from_another_host_is_refused_with_how_to_remove_it(fake_fashion, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_args(fake_fashion, run, "--stop-after", "1")) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # dead here, so only the host check can refuse it: that PID may be alive on the other host
    lock = json.dumps({"pid": dead.pid, "host": "elsewhere", "started": 0})
    (run / LOCK_NAME).write_text(lock)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"process {dead.pid} on host elsewhere" in err and f"delete {run / LOCK_NAME}" in err
    assert (run / LOCK_NAME).read_text() == lock and len(RunDir(run).read_metrics()) == 1  # nothing taken over


def test_a_lock_from_an_earlier_attempt_of_the_same_slurm_job_on_another_host_is_taken_over(
        fake_fashion, tmp_path, monkeypatch, capsys):
    """A requeued SLURM job keeps its SLURM_JOB_ID and may start on other nodes: its earlier
    attempt's lock is stale wherever it was taken. Another job's lock from another host is not."""
    run = tmp_path / "run"
    assert main(tiny_args(fake_fashion, run, "--stop-after", "1")) == 0
    (run / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "gpu07", "started": 0, "job": "815"}))
    monkeypatch.setenv("SLURM_JOB_ID", "816")
    assert main(["train", "--resume", str(run), "--no-progress", "--stop-after", "2"]) == 2
    assert "process 4242 on host gpu07" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_JOB_ID", "815")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert len(RunDir(run).read_metrics()) == 3 and not (run / LOCK_NAME).exists()


def test_sigterm_ends_the_run_with_its_lock_released(fake_fashion, tmp_path):
    """What SLURM sends a preempted job, and torchrun the workers it stops: the process exits and
    the requeued run finds no lock, and continues from the last checkpoint."""
    run = tmp_path / "run"
    env = dict(os.environ, DROPPICK_TEST_TERM_AT="epoch:2:batch:1")
    proc = subprocess.run([sys.executable, "-m", "droppick", *tiny_args(fake_fashion, run)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert not (run / LOCK_NAME).exists() and [p.name for p in RunDir(run).checkpoints()] == ["checkpoint-0001.pt"]
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0


# -- writes that fail ----------------------------------------------------------------------------

def without_timings(rows):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


@pytest.mark.parametrize("failing", ["checkpoint", "metrics"])
def test_a_full_disk_stops_the_run_clearly_and_what_was_saved_resumes(failing, fake_fashion, tmp_path, monkeypatch,
                                                                     capsys):
    import droppick.train.rundir as rundir

    straight = tmp_path / "straight"
    assert main(tiny_args(fake_fashion, straight)) == 0
    run = tmp_path / "run"
    real_save, real_append = rundir.save_checkpoint, rundir._append_jsonl

    def full_disk(path):
        if failing == "metrics":
            with open(path, "a") as f:
                f.write('{"epoch": 2, "lr": 0.0')  # half a line, as a full disk leaves it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_checkpoint(state, path):
        return full_disk(path) if path.name == "checkpoint-0002.pt" else real_save(state, path)

    def append_jsonl(path, row):
        return full_disk(path) if row["epoch"] == 2 and path.name == "metrics.jsonl" else real_append(path, row)

    if failing == "checkpoint":
        monkeypatch.setattr(rundir, "save_checkpoint", save_checkpoint)
    else:
        monkeypatch.setattr(rundir, "_append_jsonl", append_jsonl)
    assert main(tiny_args(fake_fashion, run)) == 2
    err = capsys.readouterr().err
    what = "checkpoint checkpoint-0002.pt" if failing == "checkpoint" else "the metrics of epoch 2"
    assert f"droppick train: error: [Errno {errno.ENOSPC}] cannot write {what} in {run}: No space left on device" in err
    assert f"droppick train --resume {run}" in err and "Traceback" not in err
    monkeypatch.undo()

    assert RunDir(run).latest_checkpoint()["epoch"] == 1  # the previous checkpoint still loads
    assert [r["epoch"] for r in RunDir(run).read_metrics()][:1] == [1]
    assert not (run / LOCK_NAME).exists()  # released on the way out
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert without_timings(RunDir(run).read_metrics()) == without_timings(RunDir(straight).read_metrics())


# -- a checkpoint that would run code ------------------------------------------------------------

class _RunsCode:
    """Unpickling this calls os.system: what a malicious "checkpoint" carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "checkpoint-0001.pt"
    torch.save({"format": 5, "epoch": 1, "model": _RunsCode(marker)}, path)
    return path, marker


def test_a_pickle_that_runs_code_is_refused_everywhere_and_runs_nothing(evil, fake_fashion, tmp_path, capsys):
    path, marker = evil
    run = tmp_path / "run"
    assert main(tiny_args(fake_fashion, run, "--stop-after", "1")) == 0
    for old in RunDir(run).checkpoints():
        old.unlink()
        (old.parent / (old.name + ".sha256")).unlink()
    (run / "checkpoint-0001.pt").write_bytes(path.read_bytes())  # no digest: loaded unverified, still refused
    refused = "(UnpicklingError: Weights only load failed"
    commands = {  # each command's own message: the file it names and why
        "eval": (["eval", str(path)], f"droppick eval: error: checkpoint {path} cannot be read {refused}"),
        "export": (["export", str(path), "-o", str(tmp_path / "backbone.pth")],
                   f"droppick export: error: checkpoint {path} cannot be read {refused}"),
        "resume": (["train", "--resume", str(run), "--no-progress"],
                   f"droppick train: error: no readable checkpoint in {run}: checkpoint {run / 'checkpoint-0001.pt'} "
                   f"cannot be read {refused}"),
        "transfer": (["transfer", "--task", "detection", "--backbone", str(path), "--data", str(tmp_path / "coco"),
                      "--out", str(tmp_path / "t")],
                     f"droppick transfer: error: {path} is not a torch.save file {refused}"),
    }
    for name, (argv, message) in commands.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert message in err, (name, err)
        assert "WeightsUnpickler" in err or "weights_only" in err.replace(" ", "_").lower(), (name, err)
        assert not marker.exists(), f"{name} ran the pickle's code"
    torch.load(path, weights_only=False)  # the unsafe way: the fixture really does run code
    assert marker.exists()


# -- unreadable images ---------------------------------------------------------------------------

def broken_folder(tmp_path):
    from droppick.data.datasets import write_fake_imagefolder

    root = write_fake_imagefolder(tmp_path / "folder", classes=3, per_class=6, size=40)
    bad = sorted((root / "train").rglob("*.jpg"))[2::6]  # three files of the 18, one per class
    for path in bad:
        path.write_bytes(b"\x00 not an image" * 20)
    return root, [str(p) for p in bad]


def folder_args(root, out, *extra):
    return ["train", "--dataset", "imagefolder", "--data-dir", str(root), "--model", "small_cnn", "--set",
            "image_size=32", "--set", "eval_resize=36", "--batch-size", "6", "--epochs", "4", "--warmup", "1",
            "--keep", "0.5", "--reuse-at", "3", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def test_an_unreadable_image_stops_the_run_naming_the_file(tmp_path, capsys):
    root, bad = broken_folder(tmp_path)
    assert main(folder_args(root, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert any(f"cannot read image {path}" in err for path in bad) and "--skip-unreadable" in err


def test_skip_unreadable_lists_them_leaves_them_out_of_every_subset_and_counts_them(tmp_path, capsys):
    root, bad = broken_folder(tmp_path)
    run = tmp_path / "run"
    assert main(folder_args(root, run, "--skip-unreadable")) == 0
    listed = [json.loads(line) for line in (run / "unreadable.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in listed] == [1]  # all found in the first epoch, which reads every file
    assert sorted(listed[0]["paths"]) == sorted(bad)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["unreadable_skipped"] == 3
    rows = RunDir(run).read_metrics()
    # Epoch 1 trained the 15 readable images; from then on the 3 are in no subset, the pick included.
    assert rows[0]["samples_seen"] == 15 and rows[0]["event"] == "exclude"
    assert [r["subset_size"] for r in rows] == [18, 15, 7, 15]
    state = RunDir(run).latest_checkpoint()["dap"]
    assert not set(listed[0]["indices"]) & set(state["subset"].tolist())
    assert summary["samples_seen"] == sum(r["samples_seen"] for r in rows) == 15 + 15 + 7 + 15
