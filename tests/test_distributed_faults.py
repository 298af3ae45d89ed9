"""Two-process faults: a rank that disagrees is caught; a SIGKILLed run resumes bit for bit."""

import json
import os
import re
import socket

import torch

from launch import free_port, spawn, torchrun

TRAIN = ["--model", "small_cnn", "--epochs", "4", "--warmup", "1", "--interval", "1", "--keep", "0.6",
         "--reuse-at", "3", "--batch-size", "32", "--device", "cpu", "--no-progress"]


def disagreeing_worker(rank, world, port, data, out):
    """Train with the real trainer; rank 1 quietly loses a sample at the drop after epoch 2."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from droppick import DropAndPick
    from droppick.distributed import RankDisagreementError, shutdown
    from droppick.train.config import TrainConfig
    from droppick.train.trainer import train

    if rank == 1:
        real_end_epoch = DropAndPick.end_epoch

        def end_epoch(self):
            event = real_end_epoch(self)
            if self.epoch == 3:  # epoch 2 just ended
                self._set_subset(self.subset[1:])
            return event

        DropAndPick.end_epoch = end_epoch
    cfg = TrainConfig(data_dir=data, epochs=4, warmup=1, interval=1, keep=0.6, reuse_at=[3], batch_size=32,
                      device="cpu")
    try:
        train(cfg, out)
        message = "no error"
    except RankDisagreementError as e:
        message = str(e)
    finally:
        shutdown()
    with open(os.path.join(os.path.dirname(out), f"rank{rank}.txt"), "w") as f:
        f.write(message)


def test_a_rank_that_disagrees_stops_the_run_before_its_checkpoint(tmp_path):
    from droppick.data.in_memory import make_fake_fashion_mnist
    from droppick.train.rundir import RunDir

    data = make_fake_fashion_mnist(tmp_path / "data", n_train=200, n_test=40, seed=0)
    out = tmp_path / "run"
    spawn(disagreeing_worker, (2, free_port(), str(data), str(out)))
    for rank in (0, 1):
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert message.startswith("after epoch 2 the ranks disagree on the DaP subset (ranks [0] hold subset "), message
        assert "; ranks [1] hold subset " in message and "stopped before writing its checkpoint" in message
    assert [p.name for p in RunDir(out).checkpoints()] == ["checkpoint-0001.pt"]
    assert [r["epoch"] for r in RunDir(out).read_metrics()] == [1]


def without_timings(rows):
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


def test_a_two_process_run_killed_mid_epoch_resumes_bit_for_bit(tmp_path):
    from droppick.data.in_memory import make_fake_fashion_mnist
    from droppick.train.lock import LOCK_NAME
    from droppick.train.rundir import RunDir

    data = make_fake_fashion_mnist(tmp_path / "data", n_train=237, n_test=40, seed=0)  # odd: padded shards
    cli = ["-m", "droppick.cli.main", "train", "--data-dir", str(data), *TRAIN]
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert torchrun(cli + ["--out", str(straight)]).returncode == 0
    killed = torchrun(cli + ["--out", str(run)], DROPPICK_TEST_KILL_AT="epoch:3:batch:2")  # every rank dies there
    assert killed.returncode != 0 and RunDir(run).checkpoints()[-1].name == "checkpoint-0002.pt"
    # Killed by SIGKILL, not a clean exit: torchrun names the signal, and rank 0 (dead without its
    # finally) left its lock behind, a dead PID of this host that the resume must take over.
    sigkilled = {int(pid) for pid in re.findall(r"Signal 9 \(SIGKILL\) received by PID (\d+)", killed.stderr)}
    assert len(sigkilled) == 2, killed.stderr[-3000:]
    holder = json.loads((run / LOCK_NAME).read_text())
    assert holder["pid"] in sigkilled and holder["host"] == socket.gethostname()
    resumed = torchrun(["-m", "droppick.cli.main", "train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (run / LOCK_NAME).exists()  # taken over, then released at the end

    assert without_timings(RunDir(run).read_metrics()) == without_timings(RunDir(straight).read_metrics())
    a, b = RunDir(straight).latest_checkpoint(), RunDir(run).latest_checkpoint()
    assert a["epoch"] == b["epoch"] == 4 and a["world_size"] == b["world_size"] == 2
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"]), i
    for key in ("subset", "losses", "seen"):
        assert torch.equal(a["dap"][key], b["dap"][key]), key
    assert a["dap"]["samples_per_epoch"] == b["dap"]["samples_per_epoch"]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, run)]
    assert without_timings(summaries) == without_timings(summaries[:1] * 2)


def unreadable_batch_worker(rank, world, port, data, out):
    """Rank 1's first two reads (its whole first batch) come back unreadable; rank 0 reads all its files."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    from droppick.data.datasets import FolderDataset
    from droppick.distributed import shutdown
    from droppick.train.config import TrainConfig
    from droppick.train.trainer import Trainer, train

    real_train_epoch = Trainer.train_epoch

    def train_epoch(self, progress):  # each rank's weights after each epoch: DDP keeps them equal
        loss = real_train_epoch(self, progress)
        with open(os.path.join(os.path.dirname(out), f"weights{rank}.txt"), "a") as f:
            f.write(f"{sum(float(p.double().sum()) for p in self.model.parameters())!r}\n")
        return loss

    Trainer.train_epoch = train_epoch
    if rank == 1:
        real_getitem = FolderDataset.__getitem__

        def getitem(self, index):
            image, label = real_getitem(self, index)
            return (None if self.skip_unreadable and self.reads <= 2 else image), label

        FolderDataset.__getitem__ = getitem
    cfg = TrainConfig(dataset="imagefolder", data_dir=data, model="small_cnn", image_size=32, eval_resize=36,
                      batch_size=2, epochs=3, warmup=1, interval=1, keep=0.5, reuse_at=[], skip_unreadable=True,
                      device="cpu")
    try:
        train(cfg, out)
    finally:
        shutdown()


def test_a_rank_whose_whole_batch_is_unreadable_does_not_hang_the_others(tmp_path):
    """That rank trains one batch fewer in the epoch; DDP's Join shadows its missing all-reduces.
    Without it, rank 0 waits in its last backward for a rank that has moved on (checked: the
    spawn times out), and weights of ranks whose collectives mispaired would part."""
    from droppick.data.datasets import write_fake_imagefolder
    from droppick.train.rundir import RunDir

    data = write_fake_imagefolder(tmp_path / "data", classes=3, per_class=4, size=40)
    out = tmp_path / "run"
    spawn(unreadable_batch_worker, (2, free_port(), str(data), str(out)))
    rows = RunDir(out).read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["samples_seen"] == 10  # 12 images, the 2 of rank 1's first batch unreadable
    assert json.loads((out / "summary.json").read_text())["unreadable_skipped"] == 2
    weights = [(tmp_path / f"weights{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(weights[0]) == 3 and weights[0] == weights[1]  # the ranks' all-reduces stayed paired
