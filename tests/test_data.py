"""Tests for droppick.data.in_memory: IDX I/O, Fashion-MNIST discovery/loading, subsets, augmentation."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from droppick.data.in_memory import (
    IndexedDataset,
    InMemoryImages,
    default_search_dirs,
    find_fashion_mnist,
    load_fashion_mnist,
    make_fake_fashion_mnist,
    random_crop_flip,
    read_idx,
    stratified_slice,
    write_idx,
)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"), n_train=53, n_test=20, seed=3)


# ----------------------------------------------------------------------------- IndexedDataset


def test_indexed_dataset_tuple_and_plain_items() -> None:
    pairs = IndexedDataset([("a", 1), ("b", 2)])
    assert len(pairs) == 2
    assert pairs[1] == (1, "b", 2)
    plain = IndexedDataset(torch.arange(3) * 10)
    index, item = plain[2]
    assert type(index) is int and index == 2 and int(item) == 20
    batch = torch.utils.data.default_collate([plain[0], plain[1]])
    assert batch[0].dtype == torch.long and batch[0].tolist() == [0, 1]


# ----------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path: Path, name: str) -> None:
    tensor = torch.randint(0, 256, (3, 5, 7), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    path = tmp_path / name
    write_idx(path, tensor)
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path)
    assert back.dtype == torch.uint8 and torch.equal(back, tensor)


def test_idx_truncated_names_file_and_sizes(tmp_path: Path) -> None:
    path = tmp_path / "short-idx1-ubyte"
    write_idx(path, torch.zeros(10, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"short-idx1-ubyte.*needs 10 bytes but found 7"):
        read_idx(path)


def test_idx_bad_magic_and_dtype_name_file(tmp_path: Path) -> None:
    bad_magic = tmp_path / "magic.gz"
    with gzip.open(bad_magic, "wb") as f:
        f.write(b"\x01\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match=r"magic\.gz.*magic"):
        read_idx(bad_magic)
    float_idx = tmp_path / "float-idx1"
    float_idx.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match=r"float-idx1.*0x0d"):
        read_idx(float_idx)


# ----------------------------------------------------------------------------- Fashion-MNIST


def test_find_fashion_mnist_explicit_dir(tmp_path: Path, fake_root: Path) -> None:
    assert find_fashion_mnist(fake_root) == fake_root
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")  # raw names count too
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*train-labels-idx1-ubyte"):
        find_fashion_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_fashion_mnist(tmp_path / "nope")


def test_find_fashion_mnist_search_and_hint(tmp_path: Path, fake_root: Path, monkeypatch) -> None:
    assert find_fashion_mnist(search=[tmp_path, fake_root]) == fake_root
    with pytest.raises(FileNotFoundError) as err:
        find_fashion_mnist(search=[tmp_path])
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    monkeypatch.setenv("DROPPICK_DATA", str(tmp_path))
    assert default_search_dirs()[0] == tmp_path / "fashion-mnist"


def test_load_fashion_mnist_shapes(fake_root: Path, tmp_path: Path) -> None:
    images, labels = load_fashion_mnist(fake_root, "train")
    assert images.shape == (53, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (53,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == [6, 6, 6] + [5] * 7
    test_images, _ = load_fashion_mnist(fake_root, "test")
    assert len(test_images) == 20
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(fake_root, "val")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_fashion_mnist(tmp_path, "test")


def test_load_fashion_mnist_bad_labels(tmp_path: Path) -> None:
    root = make_fake_fashion_mnist(tmp_path, n_train=12, n_test=10)
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    labels[[2, 5]] = torch.tensor([12, 200], dtype=torch.uint8)
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*\[12, 200\]"):
        load_fashion_mnist(root, "test")
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels[:4].clamp(max=9))
    with pytest.raises(ValueError, match="10 images but .* 4 labels"):
        load_fashion_mnist(root, "test")


@pytest.mark.real_data
def test_real_fashion_mnist_sizes(real_fashion_dir) -> None:
    root = real_fashion_dir
    train_images, train_labels = load_fashion_mnist(root, "train")
    test_images, test_labels = load_fashion_mnist(root, "test")
    assert train_images.shape == (60000, 1, 28, 28) and test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train_labels).tolist() == [6000] * 10
    assert torch.bincount(test_labels).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- stratified_slice


def test_stratified_slice_size_balance_and_order() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    full = torch.bincount(labels).float()
    for n in (1, 7, 33, 99, 100):
        picked = stratified_slice(labels, n, seed=0)
        assert len(picked) == n and len(picked.unique()) == n
        assert torch.equal(picked, picked.sort().values)
        counts = torch.bincount(labels[picked], minlength=4).float()
        assert ((counts - n * full / len(labels)).abs() < 1).all()


def test_stratified_slice_remainder_rule() -> None:
    # n=5 over shares 3/7, 2/7, 2/7: quotas 15/7, 10/7, 10/7 -> floors 2,1,1; the remaining
    # one goes to a fractional-part tie (3/7 each) between classes 1 and 2: lower id wins.
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    counts = torch.bincount(labels[stratified_slice(labels, 5, seed=0)], minlength=3)
    assert counts.tolist() == [2, 2, 1]


def test_stratified_slice_seeding_and_bounds() -> None:
    labels = torch.arange(200) % 10
    assert torch.equal(stratified_slice(labels, 50, 1), stratified_slice(labels, 50, 1))
    assert not torch.equal(stratified_slice(labels, 50, 1), stratified_slice(labels, 50, 2))
    for bad in (0, 201):
        with pytest.raises(ValueError, match="1 <= n <= len"):
            stratified_slice(labels, bad, 0)


# ----------------------------------------------------------------------------- random_crop_flip


def _draws(seed: int, batch: int, padding: int) -> tuple[torch.Tensor, ...]:
    """Re-draw offsets and flips in random_crop_flip's documented order."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, 2 * padding + 1, (batch,), generator=g)
    cols = torch.randint(0, 2 * padding + 1, (batch,), generator=g)
    flips = torch.randint(0, 2, (batch,), generator=g).bool()
    return rows, cols, flips


def test_random_crop_flip_matches_explicit_slicing() -> None:
    images = torch.randint(0, 256, (16, 2, 6, 5), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = random_crop_flip(images, 3, torch.Generator().manual_seed(7))
    assert out.shape == images.shape and out.dtype == images.dtype
    padded = F.pad(images, (3, 3, 3, 3))
    rows, cols, flips = _draws(7, 16, 3)
    assert flips.any() and not flips.all()
    for i in range(16):
        crop = padded[i, :, rows[i] : rows[i] + 6, cols[i] : cols[i] + 5]
        assert torch.equal(out[i], crop.flip(-1) if flips[i] else crop)


def test_random_crop_flip_identity_and_determinism() -> None:
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(random_crop_flip(images, 0, torch.Generator(), flip=False), images)
    a = random_crop_flip(images, 2, torch.Generator().manual_seed(5))
    b = random_crop_flip(images, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_random_crop_flip_covers_offsets_and_flips_half() -> None:
    # One bright pixel, placed so it survives every crop and flipped copies land in the
    # right half, reveals each sample's offsets and flip.
    batch, size, padding, row0, col0 = 2000, 12, 2, 5, 2
    images = torch.zeros(batch, 1, size, size)
    images[:, 0, row0, col0] = 1.0
    out = random_crop_flip(images, padding, torch.Generator().manual_seed(0))
    where = out[:, 0].flatten(1).argmax(1)
    row, col = where // size, where % size
    flipped = col >= size // 2
    col = torch.where(flipped, size - 1 - col, col)
    offsets = set(range(2 * padding + 1))
    assert set((row0 + padding - row).tolist()) == offsets
    col_offsets = col0 + padding - col
    assert set(col_offsets[flipped].tolist()) == set(col_offsets[~flipped].tolist()) == offsets
    assert 0.45 < flipped.float().mean().item() < 0.55


# ----------------------------------------------------------------------------- InMemoryImages


def test_in_memory_images_normalisation_and_rows(fake_root: Path) -> None:
    images, labels = load_fashion_mnist(fake_root, "train")
    data = InMemoryImages(images, labels)
    x, y = data.batch(torch.arange(len(data)), generator=None)
    assert x.dtype == torch.float32 and torch.equal(y, labels)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-4

    rows = torch.tensor([7, 0, 7, 41])
    x, y = data.batch(rows, generator=None)
    expected = (images[rows].float() / 255 - data.mean.view(1, -1, 1, 1)) / data.std.view(1, -1, 1, 1)
    assert torch.allclose(x, expected) and torch.equal(y, labels[rows])

    augmented, _ = data.batch(rows, torch.Generator().manual_seed(0), padding=2)
    assert augmented.shape == x.shape and not torch.equal(augmented, x)


def test_in_memory_images_subset_keeps_stats(fake_root: Path) -> None:
    images, labels = load_fashion_mnist(fake_root, "test")
    data = InMemoryImages(images, labels)
    sub = data.subset(torch.tensor([3, 1]))
    assert len(sub) == 2 and torch.equal(sub.labels, labels[[3, 1]])
    assert torch.equal(sub.mean, data.mean) and torch.equal(sub.std, data.std)
    with pytest.raises(ValueError, match="std must be positive"):
        InMemoryImages(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2))
