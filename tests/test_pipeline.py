"""The trainer's data paths and engine options: ImageFolder reads, CIFAR slices, AMP, cosine LR, eval."""

import json

import pytest
import torch

from droppick.cli.main import main
from droppick.train.config import TrainConfig
from droppick.data.datasets import write_fake_cifar, write_fake_imagefolder
from droppick.train.splits import build_splits
from droppick.train.rundir import RunDir
from droppick.train.trainer import Trainer, planned_steps, train


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_fake_imagefolder(tmp_path_factory.mktemp("folder"), classes=3, per_class=6, size=40)


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    return write_fake_cifar(tmp_path_factory.mktemp("cifar"), "cifar10", n_train=200, n_test=50)


def folder_config(folder, **kw):
    return TrainConfig(**({"dataset": "imagefolder", "data_dir": str(folder), "model": "resnet18", "image_size": 32,
                           "eval_resize": 36, "batch_size": 6, "epochs": 3, "warmup": 1, "interval": 1,
                           "keep": 0.5, "reuse_at": [], "device": "cpu"} | kw))


@pytest.mark.parametrize("decode", ["workers", "device"])
def test_dropped_samples_are_never_read(folder, decode, monkeypatch):
    """Which files are opened, not only how many: each epoch opens exactly its subset's files, once."""
    import builtins

    t = Trainer(folder_config(folder, decode=decode), torch.device("cpu"))
    dataset = t.train_split.dataset
    sizes = t.dap.plan().subset_sizes
    opened, real_open = [], builtins.open

    def recording_open(file, *args, **kwargs):
        if str(file).startswith(str(folder / "train")):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)  # Pillow and the byte reader both open through it
    reads = []
    while not t.dap.done:
        before, subset = dataset.reads, t.dap.subset.tolist()
        opened.clear()
        t.train_epoch(progress=False)
        t.dap.end_epoch()
        reads.append(dataset.reads - before)
        assert sorted(opened) == sorted(dataset.samples[i][0] for i in subset)
    assert reads == list(sizes) == [18, 18, 9]  # one read per subset member, none for dropped ones


def test_in_memory_dropped_samples_are_never_gathered(fake_fashion, monkeypatch):
    # The in-memory twin of the test above: every row InMemoryImages.batch gathers (and crops,
    # flips, normalises) in an epoch is a member of that epoch's subset, each exactly once.
    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=3, warmup=1, interval=1, keep=0.5, reuse_at=[],
                      batch_size=32, device="cpu")
    t = Trainer(cfg, torch.device("cpu"))
    images, gathered = t.train_split.images, []
    batch = images.batch
    monkeypatch.setattr(images, "batch", lambda indices, *a, **kw: gathered.append(indices.clone()) or batch(indices, *a, **kw))
    per_epoch = []
    while not t.dap.done:
        subset = t.dap.subset.clone()
        gathered.clear()
        t.train_epoch(progress=False)
        t.dap.end_epoch()
        assert torch.equal(torch.cat(gathered).sort().values, subset)
        per_epoch.append(sum(g.numel() for g in gathered))
    assert per_epoch == list(t.dap.plan().subset_sizes) == [240, 240, 120]


def test_folder_augmentation_is_seeded_per_sample_not_by_worker_count(folder):
    splits = [build_splits(folder_config(folder, num_workers=w))[0] for w in (0, 2)]
    order = torch.tensor([5, 0, 17, 3])
    (i0, x0, y0), = list(splits[0].batches(order, 4, seed=1, epoch=2))
    (i2, x2, y2), = list(splits[1].batches(order, 4, seed=1, epoch=2))
    assert torch.equal(i0, order) and torch.equal(x0, x2) and torch.equal(y0, y2)
    (_, x_other, _), = list(splits[0].batches(order, 4, seed=1, epoch=3))
    assert not torch.equal(x0, x_other)
    # Seeded per sample, not per batch: a sample alone, or elsewhere in another batch, looks the same.
    (_, alone, _), = list(splits[0].batches(torch.tensor([17]), 4, seed=1, epoch=2))
    (_, moved, _), = list(splits[1].batches(torch.tensor([3, 17]), 4, seed=1, epoch=2))
    assert torch.equal(alone[0], x0[2]) and torch.equal(moved[1], x0[2]) and torch.equal(moved[0], x0[3])
    # In the main process (no workers) the caller's global RNG is left as it was.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(splits[0].batches(order, 2, seed=1, epoch=2))
    assert torch.equal(torch.rand(3), expected)


def test_cifar_per_class_slice_and_eval_command(cifar10, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "cifar10-resnet110-dap63", "--data-dir", str(cifar10), "--per-class", "5",
                 "--model", "resnet20", "--set", "epochs=2", "--set", "warmup=1", "--set", "interval=1",
                 "--set", "reuse_at=[]", "--set", "lr_milestones=[]", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_train_samples"] == 50 and summary["num_test_samples"] == 50
    assert summary["recipe"] == "cifar10-resnet110-dap63" and summary["model"] == "resnet20"
    capsys.readouterr()
    checkpoint = RunDir(out).checkpoints()[-1]
    assert main(["eval", str(checkpoint), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(summary["final_test_top1"])
    assert result["top5_err"] == pytest.approx(100 - RunDir(out).read_metrics()[-1]["test_top5"])


def test_bf16_and_channels_last_reach_the_model_and_its_weights(cifar10, tmp_path, monkeypatch):
    """Observed where they act: every training forward runs under bf16 autocast on a channels-last
    batch, and the conv kernels are channels-last. Colour images (3 channels), because a 1-channel
    NCHW tensor already counts as channels-last contiguous."""
    import droppick.train.trainer as trainer

    models, seen = [], []
    real_build = trainer.build_seeded_model

    def build(cfg, in_channels, num_classes):
        model = real_build(cfg, in_channels, num_classes)
        model.register_forward_hook(lambda m, args, out: seen.append(
            (m.training, args[0].is_contiguous(memory_format=torch.channels_last), out.dtype)))
        models.append(model)
        return model

    monkeypatch.setattr(trainer, "build_seeded_model", build)
    cfg = TrainConfig(dataset="cifar10", data_dir=str(cifar10), model="tiny_cnn", epochs=2, warmup=1, interval=1,
                      keep=0.5, reuse_at=[], amp="bf16", channels_last=True, batch_size=50, device="cpu")
    train(cfg, tmp_path / "run")
    trained = [(fmt, dtype) for training, fmt, dtype in seen if training]
    assert len(trained) >= 6 and set(trained) == {(True, torch.bfloat16)}  # at least 200 + 100 images, batches of 50
    kernels = [p for p in models[0].parameters() if p.dim() == 4]
    assert kernels and all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels)
    assert not kernels[0].is_contiguous()  # 3 input channels: channels-last differs from NCHW here


def test_cosine_schedule_under_bf16_and_channels_last(fake_fashion, tmp_path):
    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=3, warmup=1, interval=1, keep=0.5, reuse_at=[],
                      amp="bf16", channels_last=True, lr_schedule="cosine", lr=0.1, batch_size=32, device="cpu")
    summary = train(cfg, tmp_path / "run")
    lrs = [m["lr"] for m in RunDir(tmp_path / "run").read_metrics()]
    assert lrs[0] == 0.1 and lrs[0] > lrs[1] > lrs[2] > 0
    steps = [8, 8, 4]  # 240, 240, 120 samples in batches of 32
    assert lrs[2] == pytest.approx(0.05 * (1 + torch.cos(torch.tensor(torch.pi * 16 / 20)).item()))
    assert summary["compute_fraction"] == pytest.approx(600 / 720)
    t = Trainer(cfg, torch.device("cpu"))
    assert planned_steps(cfg, t.dap, world_size=1) == steps and planned_steps(cfg, t.dap, world_size=2) == [4, 4, 2]


def test_eval_every_k_epochs_and_always_the_last(fake_fashion, tmp_path):
    from droppick.data.pipeline import InMemorySplit

    cfg = TrainConfig(data_dir=str(fake_fashion), epochs=5, warmup=1, interval=1, keep=0.5, reuse_at=[3],
                      batch_size=64, device="cpu", eval_every=3)
    summary = train(cfg, tmp_path / "run")
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [r["test_top1"] is not None for r in rows] == [False, False, True, False, True]
    assert summary["final_test_top1"] == rows[-1]["test_top1"]
    assert summary["best_test_top1"] == max(rows[2]["test_top1"], rows[4]["test_top1"])
    assert summary["train_seconds"] == pytest.approx(sum(r["epoch_seconds"] for r in rows))
    t = Trainer(cfg, torch.device("cpu"))  # in-memory data lives on the training device
    assert isinstance(t.train_split, InMemorySplit) and t.train_split.images.images.device == t.device


def test_imagefolder_workers_start_once_and_read_only_each_epochs_subset(folder, tmp_path, monkeypatch):
    """num_workers=2: the same two worker processes serve every epoch (one DataLoader for the
    run, persistent workers), and each epoch they open exactly the files of its subset, once."""
    import os

    from droppick.data.datasets import FolderDataset

    log = tmp_path / "reads.log"
    real = FolderDataset.__getitem__

    def logged(self, index):  # runs in the (forked) workers: they inherit the patch
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {index}\n")
        return real(self, index)

    monkeypatch.setattr(FolderDataset, "__getitem__", logged)
    t = Trainer(folder_config(folder, num_workers=2), torch.device("cpu"))
    subsets, reads, workers = [], [], []
    while not t.dap.done:
        subsets.append(t.dap.subset.tolist())
        log.write_text("")
        t.train_epoch(progress=False)
        t.dap.end_epoch()
        lines = [line.split() for line in log.read_text().splitlines()]
        reads.append(sorted(int(i) for _, i in lines))
        workers.append({int(pid) for pid, _ in lines})
    assert reads == subsets and [len(r) for r in reads] == [18, 18, 9]
    assert len(workers[0]) == 2 and os.getpid() not in workers[0]
    assert workers[1] == workers[2] == workers[0]  # started once, alive across epochs


def test_a_prefetched_epoch_yields_the_same_batches_as_one_loaded_on_demand(folder):
    """The trainer prefetches the next epoch while it evaluates: same images, same augmentation."""
    cfg = folder_config(folder, num_workers=2)
    ahead, on_demand = build_splits(cfg)[0], build_splits(cfg)[0]
    order = torch.randperm(len(ahead), generator=torch.Generator().manual_seed(3))[:10]
    ahead.prefetch(order, 4, cfg.seed, 2)
    got = list(ahead.batches(order, 4, cfg.seed, 2))
    want = list(on_demand.batches(order, 4, cfg.seed, 2))
    assert [b[0].tolist() for b in got] == [b[0].tolist() for b in want] == [c.tolist() for c in order.split(4)]
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a, b in zip(got, want))
    other = list(ahead.batches(order, 4, cfg.seed, 3))  # not what was prefetched: loaded on demand, epoch 3's crops
    assert not torch.equal(other[0][1], got[0][1])
