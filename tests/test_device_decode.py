"""--decode device: the workers read bytes, the training device decodes (here device=cpu, the same code).

That it reads only each epoch's subset is ``test_pipeline.py::test_dropped_samples_are_never_read[device]``.
"""

import json
import signal

import pytest
import torch
from PIL import Image

from droppick.cli.main import main
from droppick.data.datasets import write_fake_imagefolder
from droppick.train.splits import build_splits
from droppick.train.config import TrainConfig
from droppick.train.rundir import RunDir

from test_resume import droppick_train, without_timings


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_fake_imagefolder(tmp_path_factory.mktemp("folder"), classes=3, per_class=6, size=40)


SETTINGS = {"dataset": "imagefolder", "model": "small_cnn", "image_size": 32, "eval_resize": 36, "batch_size": 6,
            "epochs": 3, "warmup": 1, "interval": 1, "keep": 0.5, "reuse_at": [], "device": "cpu"}


def config(folder, **kw):
    return TrainConfig(**(SETTINGS | {"data_dir": str(folder), "decode": "device"} | kw))


@pytest.mark.parametrize("split", [0, 1], ids=["train", "eval"])
def test_device_decoding_draws_the_workers_crops_and_flips(folder, split):
    """Same (seed, epoch, index) draws as Pillow in the workers: the pixels differ only by the
    two resize filters, far less than between two epochs' crops of the same images."""
    order = torch.tensor([5, 0, 17, 3])
    (i_w, x_w, y_w), = build_splits(config(folder, decode="workers"))[split].batches(order, 4, seed=1, epoch=2)
    device_split = build_splits(config(folder))[split]
    (i_d, x_d, y_d), = device_split.batches(order, 4, seed=1, epoch=2)
    assert torch.equal(i_w, i_d) and torch.equal(y_w, y_d) and x_d.shape == x_w.shape == (4, 3, 32, 32)
    assert x_d.dtype == torch.float32
    assert (x_w - x_d).abs().mean() < 0.005
    if split == 0:  # augmentation: another epoch draws other crops, so the match above is not by chance
        (_, x_other, _), = device_split.batches(order, 4, seed=1, epoch=3)
        assert (x_other - x_d).abs().mean() > 0.05


def test_pngs_are_decoded_and_undecodable_files_stop_or_are_skipped(tmp_path):
    root = write_fake_imagefolder(tmp_path / "data", classes=2, per_class=4, size=40)
    png = root / "train" / "c000" / "i0001.jpg"  # a PNG under a .jpg name: decoded by content
    Image.open(png).convert("RGB").save(png, format="PNG")
    bad = root / "train" / "c001" / "i0002.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00 not a jpeg" * 20)  # a JPEG's magic, then garbage
    order = torch.arange(8)
    with pytest.raises(ValueError, match=f"cannot read image {bad}.*--skip-unreadable"):
        list(build_splits(config(root))[0].batches(order, 8, seed=0, epoch=1))
    split = build_splits(config(root, skip_unreadable=True))[0]
    (indices, images, targets), = split.batches(order, 8, seed=0, epoch=1)
    assert indices.tolist() == [0, 1, 2, 3, 4, 5, 7] and images.shape[0] == 7 == targets.numel()
    assert split.take_unreadable() == [6]
    pillow = build_splits(config(root, decode="workers", skip_unreadable=True))[0]
    (_, by_pillow, _), = pillow.batches(order, 8, seed=0, epoch=1)
    assert (images[1] - by_pillow[1]).abs().mean() < 0.005  # the PNG's pixels, as Pillow reads them
    assert (images[1] - by_pillow[0]).abs().mean() > 0.05  # ...which another image's are not


def test_decode_device_is_refused_for_in_memory_datasets():
    with pytest.raises(ValueError, match="decode applies to --dataset imagefolder"):
        TrainConfig(dataset="fashion-mnist", decode="device")


def test_sigkill_mid_epoch_resumes_bit_identically(folder, tmp_path, capsys):
    """The workers only read bytes and the decoder redraws each sample's crop from (seed, epoch,
    index), so an epoch redone after a kill trains on the same pixels."""
    args = ["--dataset", "imagefolder", "--data-dir", str(folder), "--decode", "device", "--model", "small_cnn",
            "--set", "image_size=32", "--set", "eval_resize=36", "--batch-size", "6", "--epochs", "3", "--warmup", "1",
            "--interval", "1", "--keep", "0.5", "--reuse-at", "none", "--device", "cpu"]
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["train", *args, "--out", str(straight), "--no-progress"]) == 0
    killed = droppick_train(args + ["--out", str(run)], "epoch:2:batch:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = droppick_train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert without_timings(RunDir(run).read_metrics()) == without_timings(RunDir(straight).read_metrics())
    a, b = RunDir(straight).latest_checkpoint(), RunDir(run).latest_checkpoint()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert json.loads((run / "config.json").read_text())["decode"] == "device"
