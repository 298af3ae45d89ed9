"""--dataset wds:DIR and litdata:DIR on data the tests write (Fashion-MNIST-shaped, through `droppick convert`):
the chunk-aware order, what an epoch reads and decodes, and the same subsets and decoded samples as the
in-memory path on 1 and 2 processes.

Only light imports at module level: the two-process test spawns workers that import this module.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from droppick.data.shards import chunk_fetches
from droppick.sampler import Chunks, chunk_aware_order, shard_order

pytest.importorskip("litdata")

PER_CHUNK = 8
N_TRAIN, N_TEST = 61, 20  # odd: two processes pad one sample every epoch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Fake Fashion-MNIST, and the same samples as WebDataset shards and as litdata chunks."""
    from droppick.data.convert import convert
    from droppick.data.in_memory import make_fake_fashion_mnist

    root = tmp_path_factory.mktemp("streaming")
    make_fake_fashion_mnist(root / "fashion-mnist", N_TRAIN, N_TEST, seed=0)
    for to in ("wds", "litdata"):
        convert("fashion-mnist", to, str(root / to), data_dir=str(root / "fashion-mnist"), per_chunk=PER_CHUNK)
    return root


def test_the_chunk_aware_order_is_a_seeded_permutation_that_fetches_each_chunk_once():
    chunks = Chunks(torch.arange(400) // 10, window=4)  # 40 chunks of 10
    subset = torch.randperm(400, generator=torch.Generator().manual_seed(1))[:130].sort().values
    order = chunk_aware_order(subset, chunks, seed=3, epoch=2)
    assert torch.equal(order.sort().values, subset)
    assert torch.equal(order, chunk_aware_order(subset, chunks, 3, 2))  # a resumed epoch reads the same
    assert not torch.equal(order, chunk_aware_order(subset, chunks, 3, 3))  # the next one another
    distinct = chunks.chunk_of[subset].unique().numel()
    assert chunk_fetches(order, *chunks) == (distinct, distinct)
    of_order = chunks.chunk_of[order]
    assert int((of_order[1:] != of_order[:-1]).sum()) > 2 * distinct  # within a window the chunks' samples mix
    uniform, _ = chunk_fetches(shard_order(subset, 3, 2, 0, 1), *chunks)
    assert uniform > 0.8 * subset.numel()  # the uniform order fetches a chunk for most samples

    blocks = [shard_order(subset, 3, 2, rank, 3, chunks) for rank in range(3)]
    assert {b.numel() for b in blocks} == {44}  # ceil(130 / 3): the same steps on every rank
    assert torch.equal(torch.cat(blocks)[:130], order)  # contiguous blocks, padded from the order's end
    assert set(torch.cat(blocks)[130:].tolist()) <= set(order[-2:].tolist())
    # a window cut by a block's end is read by both ranks: at most a window's chunks twice per boundary
    assert distinct < sum(chunk_fetches(b, *chunks)[0] for b in blocks) <= distinct + 2 * chunks.window
    with pytest.raises(ValueError, match="chunk_window must be >= 1"):
        chunk_aware_order(subset, Chunks(chunks.chunk_of, 0), 0, 1)
    with pytest.raises(ValueError, match="chunk_of covers 100 samples, but the subset holds sample 398"):
        chunk_aware_order(subset, Chunks(chunks.chunk_of[:100], 4), 0, 1)


def test_a_shard_read_decodes_the_order_and_skips_the_rest_undecoded(data):
    from droppick.data.in_memory import load_fashion_mnist
    from droppick.data.webdataset import TarShards, find_shards

    images, labels = load_fashion_mnist(data / "fashion-mnist", "train")
    shards = TarShards(find_shards(f"wds:{data / 'wds'}")["train"])
    assert shards.targets == labels.tolist() and len(shards.shards) == 8
    order = torch.tensor([17, 3, 60, 16, 3])  # shards 2, 0, 7; sample 3 twice, as padding repeats one
    payloads = list(shards.read(order))
    assert [index for index, _ in payloads] == order.tolist()
    image, label = shards.decode(payloads[0])
    assert torch.equal(torch.as_tensor(np.array(image))[..., 0], images[17, 0]) and label == labels[17]
    counts = shards.take_counts()
    assert counts["chunks_read"] == 3 and counts["samples_skipped"] == 8 + 8 + 5 - 4  # shard 7 holds 56..60
    assert 0 < counts["bytes_read"] < sum(shards.shards[s].stat().st_size for s in (0, 2, 7))
    assert shards.take_counts() == {"chunks_read": 0, "samples_skipped": 0, "bytes_read": 0}  # per epoch


def test_litdata_items_are_the_source_samples_with_or_without_labels_json(data, tmp_path):
    from droppick.data.chunked import LABELS_FILE, LitImages, find_splits
    from droppick.data.in_memory import load_fashion_mnist

    images, labels = load_fashion_mnist(data / "fashion-mnist", "test")
    split = LitImages(find_splits(f"litdata:{data / 'litdata'}")["test"])
    assert split.targets == labels.tolist() and split.chunk_of.tolist() == [i // PER_CHUNK for i in range(N_TEST)]
    image, label = split[13]
    assert torch.equal(torch.as_tensor(np.array(image))[..., 0], images[13, 0]) and label == labels[13]
    copy = shutil.copytree(data / "litdata" / "test", tmp_path / "test")
    (copy / LABELS_FILE).unlink()  # a dataset litdata.optimize wrote: one pass reads the labels
    assert LitImages(copy).targets == labels.tolist()
    (copy / LABELS_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"labels.json holds 2 labels for the 20 items of .*write it again"):
        LitImages(copy)


def config(dataset: str, root: Path, **changes):
    from droppick.train.config import TrainConfig

    values = dict(dataset=dataset, data_dir=str(root / "fashion-mnist") if dataset == "fashion-mnist" else None,
                  model="small_cnn", epochs=3, warmup=1, interval=1, keep=0.4, reuse_at=[], batch_size=8, lr=0.05,
                  device="cpu", image_size=8, eval_resize=10, chunk_window=2, policy="random")
    return TrainConfig(**(values | changes))


@contextlib.contextmanager
def recording():
    """{epoch: indices} of the training samples batched (in memory) or decoded (read from files)."""
    from droppick.data import folder_split
    from droppick.data.pipeline import InMemorySplit

    seen: dict[int, list[int]] = {}
    batches, getitems = InMemorySplit.batches, folder_split._SeededSamples.__getitems__

    def batched(self, order, batch_size, seed, epoch):
        if epoch:  # evaluation reads as epoch 0
            seen.setdefault(epoch, []).extend(order.tolist())
        return batches(self, order, batch_size, seed, epoch)

    def decoded(self, items):
        for index, epoch, *_ in items:
            if epoch:
                seen.setdefault(epoch, []).append(index)
        return getitems(self, items)

    with mock.patch.object(InMemorySplit, "batches", batched), \
            mock.patch.object(folder_split._SeededSamples, "__getitems__", decoded):
        yield seen


SOURCES = {"in-memory": "fashion-mnist", "wds": "wds:{root}/wds", "litdata": "litdata:{root}/litdata"}


def train_all(rank: int, root: Path, world: int, ports: tuple = ()) -> None:
    """Train each source (a spawned rank of ``world``, or this process), saving what each rank read.
    Each run of ``world`` processes gets a process group of its own, as a torchrun launch would."""
    from droppick.train.trainer import train

    if world > 1:
        torch.set_num_threads(1)  # two ranks on two cores
    for (name, dataset), port in zip(SOURCES.items(), ports or [None] * len(SOURCES)):
        if world > 1:
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                              WORLD_SIZE=str(world))
        with recording() as seen:
            train(config(dataset.format(root=root), root), root / f"{name}-{world}")
        if world > 1:
            torch.distributed.destroy_process_group()
        (root / f"{name}-{world}" / f"read-{rank}.json").write_text(json.dumps(seen))


@pytest.mark.parametrize("world", [1, 2])
def test_every_epoch_reads_the_in_memory_paths_subset_on_1_and_2_processes(data, world):
    """Policy random: its subsets do not depend on the losses, which the chunk-aware order changes
    (other batches, so other losses, as with another seed); the subsets and the samples each epoch
    decodes are then the in-memory path's exactly."""
    from launch import free_port, spawn

    from droppick.distributed import subset_sha256
    from droppick.train.rundir import RunDir

    if world == 1:
        train_all(0, data, 1)
    else:
        spawn(train_all, (data, world, tuple(free_port() for _ in SOURCES)), nprocs=world)
    rows, reads, by_rank = {}, {}, {}
    for name in SOURCES:
        rows[name] = RunDir(data / f"{name}-{world}").read_metrics()
        by_rank[name] = [{int(e): i for e, i in json.loads((data / f"{name}-{world}" / f"read-{rank}.json").read_text())
                          .items()} for rank in range(world)]
        reads[name] = {epoch: sorted(i for got in by_rank[name] for i in got[epoch]) for epoch in by_rank[name][0]}
    assert [r["subset_size"] for r in rows["in-memory"]] == [61, 61, 24]  # 40% kept at the drop
    for name in ("wds", "litdata"):
        assert [r["subset_sha256"] for r in rows[name]] == [r["subset_sha256"] for r in rows["in-memory"]]
        assert {e: set(i) for e, i in reads[name].items()} == {e: set(i) for e, i in reads["in-memory"].items()}
    for name in SOURCES:
        for row in rows[name]:
            decoded = reads[name][row["epoch"]]
            padding = -row["subset_size"] % world  # the sampler's repeats, so every rank runs the same steps
            assert subset_sha256(torch.tensor(sorted(set(decoded)))) == row["subset_sha256"]
            assert row["samples_decoded"] == len(decoded) == row["subset_size"] + padding
            if name != "in-memory":  # each chunk holding a sample of a rank's block is read once by that rank
                assert row["chunks_read"] == row["chunks_min"] <= -(-N_TRAIN // PER_CHUNK) + (world - 1) * 2  # window 2
    for row in rows["wds"]:  # the rest of a shard read is skipped past, undecoded
        shard_sizes = [min(PER_CHUNK, N_TRAIN - PER_CHUNK * c) for c in range(-(-N_TRAIN // PER_CHUNK))]
        touched = [{i // PER_CHUNK for i in got[row["epoch"]]} for got in by_rank["wds"]]
        assert row["samples_skipped"] == sum(sum(shard_sizes[c] for c in shards) - len(set(got[row["epoch"]]))
                                             for shards, got in zip(touched, by_rank["wds"]))
        assert row["bytes_read"] > 0
    assert all(r["samples_skipped"] == 0 and "bytes_read" not in r for r in rows["litdata"] + rows["in-memory"])


def test_a_streamed_run_resumes_exactly_and_refuses_a_missing_split(data, tmp_path):
    """Policy dap, three epochs: stopped after the first and resumed, the run trains the same order and
    ends with the same subsets, losses and reads as an uninterrupted one."""
    from droppick.train.rundir import RunDir
    from droppick.train.trainer import train

    cfg = config(f"wds:{data / 'wds'}", data, policy="dap")
    train(cfg, tmp_path / "straight")
    train(cfg, tmp_path / "resumed", stop_after=1)
    train(None, tmp_path / "resumed", resume=True)
    rows = [[{k: v for k, v in r.items() if not k.endswith("seconds")} for r in RunDir(tmp_path / run).read_metrics()]
            for run in ("straight", "resumed")]
    assert rows[0] == rows[1] and [r["samples_decoded"] for r in rows[0]] == [61, 61, 24]

    (tmp_path / "only-train").mkdir()
    shutil.copy(data / "wds" / "train-000000.tar", tmp_path / "only-train")
    with pytest.raises(FileNotFoundError, match=r"holds no test-\*.tar \(the evaluation split may be val-\*.tar"):
        train(config(f"wds:{tmp_path / 'only-train'}", data), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"lacks train/index.json and test/index.json"):
        train(config(f"litdata:{tmp_path / 'only-train'}", data), tmp_path / "b")


def test_both_chunked_formats_train_the_same_dap_run(data, tmp_path):
    """Policy dap, whose subsets follow the losses: WebDataset shards and litdata chunks of the same
    samples, chunked alike, give the same chunk-aware order, so the same losses and subsets epoch by
    epoch (the in-memory path has no chunks, so another order and other losses: compared under
    random above)."""
    from droppick.train.rundir import RunDir
    from droppick.train.trainer import train

    rows = {}
    for name in ("wds", "litdata"):
        train(config(SOURCES[name].format(root=data), data, policy="dap"), tmp_path / name)
        rows[name] = RunDir(tmp_path / name).read_metrics()
    for key in ("subset_size", "subset_sha256", "train_loss", "samples_decoded"):
        assert [r[key] for r in rows["wds"]] == [r[key] for r in rows["litdata"]], key
    assert [r["subset_size"] for r in rows["wds"]] == [61, 61, 24]


def test_the_large_datasets_page_runs_as_printed(tmp_path, monkeypatch):
    """The page's Fashion-MNIST lines, run by the installed `droppick` on fake data where the printed
    paths look (DROPPICK_DATA; the ImageNet lines are parsed and started in test_readme_commands),
    then its own-loop block on the data they wrote."""
    from test_library_api import readme_block
    from test_readme_commands import blocks, command_lines, section

    from droppick.data.in_memory import make_fake_fashion_mnist
    from droppick.train.rundir import RunDir

    make_fake_fashion_mnist(tmp_path / "data" / "fashion-mnist", 1200, 300, seed=0)
    [block] = blocks(section("Converting and training"))
    lines = [words for words in command_lines(block) if "imagenet" not in " ".join(words)]
    assert [w[1] for w in lines] == ["convert", "convert", "train", "train"]
    env = dict(os.environ, DROPPICK_DATA=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    for words in lines:
        proc = subprocess.run([str(Path(sys.executable).parent / "droppick"), *words[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    for run in ("runs/wds", "runs/litdata"):
        rows = RunDir(tmp_path / run).read_metrics()
        assert [r["subset_size"] for r in rows] == [r["samples_decoded"] for r in rows] == [1000, 1000, 500, 250]
        assert all(r["chunks_read"] == r["chunks_min"] for r in rows)

    monkeypatch.chdir(tmp_path)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 28 * 28, 10))
    namespace = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.01),
                 "F": torch.nn.functional, "DataLoader": torch.utils.data.DataLoader}
    exec(readme_block("Chunks(train_set.chunk_of"), namespace)
    dap = namespace["dap"]
    assert dap.done and dap.samples_per_epoch == [1200, 1200, 600, 300] == list(dap.plan().subset_sizes)
    last = shard_order(dap.subset, 0, 4, 0, 1, dap.chunks)
    assert chunk_fetches(last, *dap.chunks) == (2, 2)  # 1200 samples in chunks of 1000


def test_an_image_folder_converts_byte_for_byte_and_convert_refuses_what_it_cannot_write(tmp_path, capsys):
    from droppick.cli.main import main
    from droppick.data.chunked import LitImages
    from droppick.data.datasets import FolderDataset, write_fake_imagefolder
    from droppick.data.webdataset import TarShards, find_shards

    folder = write_fake_imagefolder(tmp_path / "tree", classes=3, per_class=4, size=8)
    for to in ("wds", "litdata"):
        assert main(["convert", "--dataset", "imagefolder", "--data-dir", str(folder), "--to", to,
                     "--out", str(tmp_path / to), "--per-chunk", "5"]) == 0
        assert f"train on it with --dataset {to}:{tmp_path / to}" in capsys.readouterr().out
    source = FolderDataset(folder / "val")
    shards = TarShards(find_shards(f"wds:{tmp_path / 'wds'}")["test"])  # val-*.tar: the evaluation split
    litdata = LitImages(tmp_path / "litdata" / "val", encoded=True)
    assert shards.targets == litdata.targets == source.targets and len(shards.shards) == 3
    stored = {index: data for index, data in shards.read(torch.arange(12))}
    for index, (path, _) in enumerate(source.samples):  # the JPEG files themselves, not re-encoded
        assert stored[index] == Path(path).read_bytes() == bytes(litdata[index][0].numpy())

    assert main(["convert", "--dataset", "imagefolder", "--to", "wds", "--out", str(tmp_path / "x")]) == 2
    assert "needs --data-dir pointing at a folder with train/ and val/" in capsys.readouterr().err
    assert main(["convert", "--dataset", "imagefolder", "--data-dir", str(folder), "--to", "wds",
                 "--out", str(tmp_path / "wds")]) == 2
    assert "exists and is not an empty folder; convert never overwrites" in capsys.readouterr().err


def test_an_unreadable_image_in_a_shard_is_named_and_with_skip_unreadable_left_out(data, tmp_path):
    """Sample 5's PNG is cut short: the run stops naming shard and key; --skip-unreadable lists it."""
    import tarfile

    from droppick.data.convert import write_wds
    from droppick.train.rundir import RunDir
    from droppick.train.trainer import train

    broken = tmp_path / "broken"
    broken.mkdir()
    for split in ("train", "test"):
        with tarfile.open(data / "wds" / f"{split}-000000.tar") as tar:
            samples = [(tar.extractfile(f"{i:08d}.png").read(), "png", int(tar.extractfile(f"{i:08d}.cls").read()))
                       for i in range(8)]
        if split == "train":
            samples[5] = (samples[5][0][:40], "png", samples[5][2])
        write_wds(iter(samples), broken, split, per_chunk=4)
    cfg = dict(epochs=2, warmup=1, batch_size=4, decode="device")  # the bytes go to the device decoder
    with pytest.raises(ValueError, match=r"cannot read image .*broken/train-000001.tar:00000005"):
        train(config(f"wds:{broken}", data, **cfg), tmp_path / "stops")
    train(config(f"wds:{broken}", data, skip_unreadable=True, **cfg), tmp_path / "skips")
    run = RunDir(tmp_path / "skips")
    assert [json.loads(line)["indices"] for line in run.unreadable_path.read_text().splitlines()] == [[5]]
    assert [r["subset_size"] for r in run.read_metrics()] == [8, 7] and run.read_metrics()[0]["samples_decoded"] == 8
