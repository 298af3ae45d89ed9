"""Tests for droppick.data.datasets (CIFAR pickles, ImageFolder trees) and droppick.data.transforms."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from droppick.data.in_memory import InMemoryImages
from droppick.data.datasets import (
    CIFAR_DIRS,
    CIFAR_MEAN,
    CIFAR_STD,
    FolderDataset,
    find_cifar,
    find_imagefolder,
    load_cifar,
    per_class_subsample,
    write_fake_cifar,
    write_fake_imagefolder,
)

try:
    from droppick.data import transforms
except ImportError:  # torchvision is only needed by the folder/transform half of this file
    transforms = None
needs_torchvision = pytest.mark.skipif(transforms is None, reason="torchvision is not installed")

# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("name, label_key, num_classes", [("cifar10", "labels", 10), ("cifar100", "fine_labels", 100)])
def test_cifar_round_trip(tmp_path: Path, name: str, label_key: str, num_classes: int) -> None:
    folder = write_fake_cifar(tmp_path, name, n_train=23, n_test=7, seed=1)
    assert folder == tmp_path / CIFAR_DIRS[name]
    assert find_cifar(name, tmp_path) == folder  # the parent
    assert find_cifar(name, folder) == folder  # the extracted folder itself
    images, labels = load_cifar(folder, name, "train")
    assert images.shape == (23, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (23,) and labels.dtype == torch.int64
    assert 0 <= int(labels.min()) and int(labels.max()) < num_classes
    test_images, _ = load_cifar(folder, name, "test")
    assert test_images.shape == (7, 3, 32, 32)
    # Read the first file independently: rows are 1024 red, 1024 green, then 1024 blue values.
    first = "data_batch_1" if name == "cifar10" else "train"
    with open(folder / first, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    rows = torch.from_numpy(entry["data"])
    n = len(rows)
    assert torch.equal(images[:n, 0].reshape(n, -1), rows[:, :1024])
    assert torch.equal(images[:n, 2].reshape(n, -1), rows[:, 2048:])
    assert labels[:n].tolist() == entry[label_key]


@needs_torchvision
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_fake_cifar_reads_identically_with_torchvision(tmp_path: Path, name: str) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100

    class Unchecked(CIFAR10 if name == "cifar10" else CIFAR100):
        # The fakes cannot match the official md5 sums; everything else is torchvision's own reader.
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = []

    write_fake_cifar(tmp_path, name, n_train=12, n_test=5, seed=2)
    folder = find_cifar(name, tmp_path)
    for split in ("train", "test"):
        reference = Unchecked(str(tmp_path), train=split == "train")
        images, labels = load_cifar(folder, name, split)
        assert torch.equal(images.permute(0, 2, 3, 1), torch.from_numpy(reference.data))  # torchvision is HWC
        assert labels.tolist() == reference.targets


def test_find_cifar_errors_say_what_to_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*cifar-10-python\.tar\.gz"):
        find_cifar("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python\.tar\.gz"):
        find_cifar("cifar100", tmp_path)
    folder = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=2)
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks data_batch_3\b"):
        find_cifar("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar10 needs --data-dir: .*cifar-10-python\.tar\.gz"):
        find_cifar("cifar10", None)
    with pytest.raises(ValueError, match="unknown CIFAR dataset 'cifar1000'"):
        find_cifar("cifar1000", tmp_path)


def _rewrite(path: Path, **changes: object) -> None:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    entry.update(changes)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"labels": [10, 0, 1]}, r"'labels' must lie in 0\.\.9, found \[10\]"),
        ({"labels": [0, 1]}, r"3 images but 'labels' has shape \(2,\)"),
        ({"data": np.zeros((3, 3071), np.uint8)}, r"'data' must be uint8 \[N, 3072\]"),
    ],
)
def test_load_cifar_rejects_bad_files_naming_them(tmp_path: Path, changes: dict, message: str) -> None:
    folder = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=3)
    _rewrite(folder / "test_batch", **changes)
    with pytest.raises(ValueError, match=f"test_batch: {message}"):
        load_cifar(folder, "cifar10", "test")


def test_load_cifar_rejects_a_non_pickle(tmp_path: Path) -> None:
    folder = write_fake_cifar(tmp_path, "cifar100", n_train=10, n_test=3)
    (folder / "test").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="test: not a CIFAR python pickle"):
        load_cifar(folder, "cifar100", "test")


# ----------------------------------------------------------------------------- per_class_subsample


def test_per_class_subsample_counts_and_determinism() -> None:
    shuffle = torch.randperm(21, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(3).repeat_interleave(torch.tensor([7, 5, 9]))[shuffle]
    picked = per_class_subsample(labels, 4, seed=3)
    assert picked.dtype == torch.int64 and torch.equal(picked, picked.sort().values)
    assert picked.unique().numel() == 12
    assert torch.bincount(labels[picked]).tolist() == [4, 4, 4]
    assert torch.equal(picked, per_class_subsample(labels, 4, seed=3))
    assert not torch.equal(picked, per_class_subsample(labels, 4, seed=4))
    assert per_class_subsample(labels, 5, seed=0).numel() == 15  # class 1 has exactly 5: all kept


def test_per_class_subsample_error_names_short_class() -> None:
    labels = torch.tensor([0, 0, 0, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="class 1 has 1"):
        per_class_subsample(labels, 2, seed=0)


# ----------------------------------------------------------------------------- ImageFolder


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_imagefolder(tmp_path_factory.mktemp("folder"), classes=3, per_class=4, size=40, seed=0)


@needs_torchvision
def test_folder_dataset_items(folder_root: Path) -> None:
    train, val = find_imagefolder(folder_root)
    dataset = FolderDataset(train, transform=transforms.imagenet_eval_transform(resize=36, crop=32))
    assert dataset.classes == ["c000", "c001", "c002"] and len(dataset) == 12
    assert dataset.targets == [0] * 4 + [1] * 4 + [2] * 4
    image, label = dataset[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1
    assert len(FolderDataset(val)) == 12


@needs_torchvision
def test_folder_dataset_reads_only_requested_files(folder_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    dataset = FolderDataset(folder_root / "train")
    assert dataset.reads == 0 and opened == []  # indexing the tree decodes nothing
    for i in (2, 9, 2):
        dataset[i]
    assert dataset.reads == 3
    assert opened == [dataset.samples[i][0] for i in (2, 9, 2)]


@needs_torchvision
def test_folder_dataset_corrupt_image_names_file(tmp_path: Path) -> None:
    root = write_fake_imagefolder(tmp_path, classes=2, per_class=1, size=8, split_names=("train",))
    bad = root / "train" / "c001" / "broken.jpg"
    bad.write_bytes(b"\x00garbage, not a jpeg" * 10)
    dataset = FolderDataset(root / "train")
    index = [p for p, _ in dataset.samples].index(str(bad))
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):
        dataset[index]


@needs_torchvision
def test_folder_dataset_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"image folder {tmp_path / 'nope'} does not exist"):
        FolderDataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a usable ImageFolder tree"):
        FolderDataset(tmp_path)  # no class folders
    (tmp_path / "cat").mkdir()
    with pytest.raises(FileNotFoundError, match="at least one image"):
        FolderDataset(tmp_path)  # a class folder without images


@needs_torchvision
def test_find_imagefolder_errors(tmp_path: Path) -> None:
    write_fake_imagefolder(tmp_path, classes=2, per_class=1, size=8, split_names=("train",))
    with pytest.raises(FileNotFoundError, match=r"lacks val/; --data-dir must hold train/CLASS/IMAGE"):
        find_imagefolder(tmp_path)
    write_fake_imagefolder(tmp_path, classes=3, per_class=1, size=8, split_names=("val",))
    with pytest.raises(ValueError, match=r"only in train: \[\], only in val: \['c002'\]"):
        find_imagefolder(tmp_path)


# ----------------------------------------------------------------------------- transforms


@needs_torchvision
def test_transform_output_shapes() -> None:
    from PIL import Image

    image = Image.fromarray(np.full((40, 56, 3), 100, np.uint8))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        train = transforms.imagenet_train_transform(size=32)(image)
        evaluated = transforms.imagenet_eval_transform(resize=36, crop=32)(image)
        cifar = transforms.cifar_pil_train_transform()(Image.fromarray(np.zeros((32, 32, 3), np.uint8)))
    for out in (train, evaluated, cifar):
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"crop \(40\) must not exceed resize \(36\)"):
        transforms.imagenet_eval_transform(resize=36, crop=40)


def _decode_crops(normalised: torch.Tensor) -> torch.Tensor:
    """(row offset, column offset, flipped) of crops of the coordinate image below, one row per sample.

    Pixel (r, c) holds r + 1 in channel 0 and c + 1 in channel 1, so padding (0) never
    looks like image; the centre of a 32x32 crop of the 4-padded image is always inside it.
    """
    mean = torch.tensor(CIFAR_MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD["cifar10"]).view(1, 3, 1, 1)
    pixels = ((normalised * std + mean) * 255).round().long()
    rows = pixels[:, 0, 16, 16] - 13  # out row 16 shows original row 12 + dy, value 13 + dy
    left, right = pixels[:, 1, 16, 15], pixels[:, 1, 16, 16]
    return torch.stack([rows, torch.minimum(left, right) - 12, (right < left).long()], dim=1)


@needs_torchvision
def test_batched_and_pil_augmentation_agree() -> None:
    """The issue's requirement: both paths draw the same distribution of crops and flips.

    Fixed seeds make this deterministic; the bounds are ~4 standard errors wide anyway.
    """
    from PIL import Image

    draws = 3000
    coords = torch.arange(1, 33, dtype=torch.uint8)
    blue = torch.full((32, 32), 200, dtype=torch.uint8)
    image = torch.stack([coords[:, None].expand(32, 32), coords[None, :].expand(32, 32), blue])
    stats = CIFAR_MEAN["cifar10"], CIFAR_STD["cifar10"]
    in_memory = InMemoryImages(image[None], torch.zeros(1, dtype=torch.long), *stats)
    batched, _ = in_memory.batch(torch.zeros(draws, dtype=torch.long), torch.Generator().manual_seed(0), padding=4)

    transform = transforms.cifar_pil_train_transform(padding=4)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    global_state = torch.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        per_image = torch.stack([transform(pil) for _ in range(draws)])
    assert torch.equal(torch.get_rng_state(), global_state)

    outputs = {"batched": batched, "per_image": per_image}
    decoded = {path: _decode_crops(out) for path, out in outputs.items()}
    for path, params in decoded.items():
        for column in (0, 1):
            frequency = torch.bincount(params[:, column], minlength=9).float() / draws
            assert len(frequency) == 9, f"{path}: offsets outside 0..8"
            assert (frequency - 1 / 9).abs().max() < 0.04, f"{path} offset {column}: {frequency.tolist()}"
        assert abs(params[:, 2].float().mean().item() - 0.5) < 0.03, path
        assert len({tuple(p) for p in params.tolist()}) == 9 * 9 * 2, f"{path}: some crop/flip never drawn"
    # Same draw, same pixels: the first sample of every (dy, dx, flip) must match across paths.
    first = {path: {tuple(p): i for i, p in reversed(list(enumerate(d.tolist())))} for path, d in decoded.items()}
    for key, i in first["batched"].items():
        torch.testing.assert_close(per_image[first["per_image"][key]], batched[i], msg=f"crop {key} differs")
