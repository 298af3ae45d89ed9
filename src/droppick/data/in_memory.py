"""Data loading for droppick: IDX files, Fashion-MNIST, stratified subsets, batched augmentation.

Everything random takes an explicit ``torch.Generator`` so runs are reproducible
without touching the global RNG.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..selection import stratified_choice

# System-wide locations. $DROPPICK_DATA is prepended by default_search_dirs() at call
# time rather than here, so changing the environment after import still takes effect.
FASHION_MNIST_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

_SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_GET_DATA_HINT = (
    "Install it with `apt-get install dataset-fashion-mnist` (Debian), set DROPPICK_DATA to a directory "
    "containing fashion-mnist/, or pass `--data-dir DIR` with the four IDX files (raw or .gz)."
)
_IDX_UINT8 = 0x08
Stats = Sequence[float] | torch.Tensor
FASHION_MNIST_NUM_CLASSES = 10


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so each item starts with its own index: ``(i, *item)``."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple:
        item = self.dataset[i]
        return (int(i), *item) if isinstance(item, (tuple, list)) else (int(i), item)


def _open(path: Path, mode: str):
    if path.suffix == ".gz":
        # mtime=0 keeps written archives byte-identical across runs.
        return gzip.GzipFile(path, mode, mtime=0) if "w" in mode else gzip.open(path, mode)
    return open(path, mode)


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read a uint8 IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    with _open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{path}: bad IDX magic {data[:4].hex() or '(empty file)'}; expected 0000 followed by a "
            "dtype byte and a dimension count. Is this really an (uncompressed or .gz) IDX file?"
        )
    code, ndim = data[2], data[3]
    if code != _IDX_UINT8:
        raise ValueError(f"{path}: IDX dtype code 0x{code:02x} is not supported; only 0x08 (uint8) is")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header, expected {header} bytes for {ndim} dims, found {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    found = len(data) - header
    if found != expected:
        raise ValueError(
            f"{path}: IDX data size mismatch, shape {tuple(shape)} needs {expected} bytes but found {found}"
            " (truncated or corrupt download?)"
        )
    # frombuffer is read-only, so copy before handing it to torch.
    array = np.frombuffer(data, dtype=np.uint8, offset=header).copy()
    return torch.from_numpy(array).reshape(shape)


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (gzip when the name ends in ``.gz``)."""
    if tensor.dtype != torch.uint8:
        raise ValueError(f"write_idx supports only uint8 tensors; convert the {tensor.dtype} tensor first")
    if tensor.dim() > 255:
        raise ValueError(f"IDX allows at most 255 dimensions, got {tensor.dim()}")
    header = bytes([0, 0, _IDX_UINT8, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    with _open(Path(path), "wb") as f:
        f.write(header)
        f.write(tensor.detach().cpu().contiguous().numpy().tobytes())


def default_search_dirs() -> list[Path]:
    """Default Fashion-MNIST locations: ``$DROPPICK_DATA/fashion-mnist`` if set, then FASHION_MNIST_DIRS."""
    env = os.environ.get("DROPPICK_DATA")
    return ([Path(env) / "fashion-mnist"] if env else []) + list(FASHION_MNIST_DIRS)


def _idx_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_files(root: Path) -> list[str]:
    names = [name for pair in _SPLIT_FILES.values() for name in pair]
    return [name for name in names if _idx_file(root, name) is None]


def find_fashion_mnist(
    data_dir: str | os.PathLike | None = None, search: Iterable[str | os.PathLike] | None = None
) -> Path:
    """Return the directory holding the four Fashion-MNIST IDX files (raw or ``.gz``).

    ``data_dir`` is checked alone; otherwise ``search`` (default: ``default_search_dirs()``)
    is tried in order.
    """
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"--data-dir {root} does not exist or is not a directory. {_GET_DATA_HINT}")
        missing = _missing_files(root)
        if missing:
            raise FileNotFoundError(f"{root} lacks the Fashion-MNIST files {', '.join(missing)}. {_GET_DATA_HINT}")
        return root
    candidates = [Path(p) for p in (default_search_dirs() if search is None else search)]
    for root in candidates:
        if root.is_dir() and not _missing_files(root):
            return root
    searched = ", ".join(str(p) for p in candidates) or "(no directories)"
    raise FileNotFoundError(f"Fashion-MNIST not found in {searched}. {_GET_DATA_HINT}")


def load_fashion_mnist(root: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split ("train" or "test") as uint8 images ``[N,1,H,W]`` and int64 labels ``[N]``."""
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    root = Path(root)
    image_path, label_path = (_idx_file(root, name) for name in _SPLIT_FILES[split])
    if image_path is None or label_path is None:
        names = " and ".join(_SPLIT_FILES[split])
        raise FileNotFoundError(f"{root} lacks {names}. {_GET_DATA_HINT}")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dim() != 3:
        raise ValueError(f"{image_path}: expected images of shape [N,H,W], found {tuple(images.shape)}")
    if labels.dim() != 1:
        raise ValueError(f"{label_path}: expected labels of shape [N], found {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise ValueError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    bad = labels[labels >= FASHION_MNIST_NUM_CLASSES].unique()
    if bad.numel():
        raise ValueError(f"{label_path}: labels must lie in 0..{FASHION_MNIST_NUM_CLASSES - 1}, found {bad.tolist()}")
    return images.unsqueeze(1), labels.long()


def stratified_slice(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded, class-stratified subset of exactly ``n`` samples.

    Quotas as in ``selection.stratified_choice`` (largest remainders, ties to the lower class).
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    total = len(labels)
    if not 1 <= n <= total:
        raise ValueError(f"n must satisfy 1 <= n <= len(labels) = {total}, got n={n}")
    return stratified_choice(labels, n, torch.Generator().manual_seed(seed))


def random_crop_flip(
    images: torch.Tensor, padding: int, generator: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """Zero-pad, random-crop back to HxW and (optionally) horizontally flip each sample.

    Draws from ``generator`` in this order: B row offsets, B column offsets (both
    uniform in 0..2*padding), then, if ``flip``, B flip bits (each 1 with prob 0.5).
    The whole batch is produced by a single advanced-indexing gather.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [B,C,H,W], got shape {tuple(images.shape)}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    b, c, h, w = images.shape
    span = 2 * padding + 1
    rows0 = torch.randint(0, span, (b,), generator=generator, device=generator.device)
    cols0 = torch.randint(0, span, (b,), generator=generator, device=generator.device)
    device = images.device
    rows = rows0.to(device)[:, None] + torch.arange(h, device=device)
    cols = cols0.to(device)[:, None] + torch.arange(w, device=device)
    if flip:
        flips = torch.randint(0, 2, (b,), generator=generator, device=generator.device).bool()
        cols = torch.where(flips.to(device)[:, None], cols.flip(1), cols)
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    batch_idx = torch.arange(b, device=device)[:, None, None, None]
    chan_idx = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


class InMemoryImages:
    """A uint8 image tensor with labels and per-channel normalisation statistics.

    ``batch`` gathers only the requested rows, so samples that are never asked for cost nothing.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, mean: Stats | None = None, std: Stats | None = None
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 [N,C,H,W] tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.dim() != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be 1-D with {len(images)} entries, got shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        if mean is None or std is None:
            computed_mean, computed_std = _channel_stats(images)
            mean = computed_mean if mean is None else mean
            std = computed_std if std is None else std
        self.mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        self.std = torch.as_tensor(std, dtype=torch.float32).flatten()
        channels = images.shape[1]
        if self.mean.numel() != channels or self.std.numel() != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel)")
        if not bool((self.std > 0).all()):
            raise ValueError(f"std must be positive per channel, got {self.std.tolist()}; pass std explicitly")

    def __len__(self) -> int:
        return len(self.images)

    def batch(
        self, indices: torch.Tensor, generator: torch.Generator | None, padding: int = 4, flip: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float32 images and labels for ``indices``; augmented iff ``generator`` is given."""
        indices = torch.as_tensor(indices, dtype=torch.long).to(self.images.device)
        x = self.images[indices]
        if generator is not None:
            # Augment while still uint8: a quarter of the bytes of float32 to move around.
            x = random_crop_flip(x, padding, generator, flip)
        shape = (1, -1, 1, 1)
        mean = self.mean.to(x.device).view(shape)
        std = self.std.to(x.device).view(shape)
        return (x.float() / 255 - mean) / std, self.labels[indices]

    def subset(self, indices: torch.Tensor) -> InMemoryImages:
        """The rows ``indices``, keeping this object's mean and std."""
        indices = torch.as_tensor(indices, dtype=torch.long).to(self.images.device)
        return InMemoryImages(self.images[indices], self.labels[indices], self.mean, self.std)

    def to(self, device: torch.device | str) -> InMemoryImages:
        """A copy with images and labels on ``device`` (e.g. to keep the whole set on the GPU)."""
        return InMemoryImages(self.images.to(device), self.labels.to(device), self.mean, self.std)


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std in 0..1 units.

    A 256-bin histogram per channel makes this exact and avoids a float copy of the dataset.
    """
    channels = range(images.shape[1])
    hist = torch.stack([torch.bincount(images[:, c].flatten(), minlength=256) for c in channels]).cpu().double()
    hist /= hist.sum(1, keepdim=True)
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = hist @ values
    std = (hist @ values.square() - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float()


def make_fake_fashion_mnist(root: str | os.PathLike, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Test/demo helper: write four tiny, learnable Fashion-MNIST-shaped ``.gz`` IDX files to ``root``.

    Class ``c`` is a patch of stripes (horizontal for c < 5, vertical otherwise) with period
    ``2 + c % 5`` and a random phase, over uniform noise. Stripes survive crops and
    horizontal flips, so a small CNN beats chance within a couple of epochs.
    Labels are balanced over the 10 classes (counts differ by at most one).
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (torch.arange(n) % FASHION_MNIST_NUM_CLASSES)[torch.randperm(n, generator=generator)]
        images = _fake_images(labels, generator)
        image_name, label_name = _SPLIT_FILES[split]
        write_idx(root / f"{image_name}.gz", images)
        write_idx(root / f"{label_name}.gz", labels.to(torch.uint8))
    return root


def _fake_images(labels: torch.Tensor, generator: torch.Generator, size: int = 28) -> torch.Tensor:
    n = len(labels)
    period = (2 + labels % 5)[:, None, None]
    phase = torch.randint(0, 6, (n, 1, 1), generator=generator)
    coord = torch.arange(size)
    along = torch.where((labels < 5)[:, None, None], coord[None, :, None], coord[None, None, :])
    stripes = (along + phase) % period == 0
    patch = torch.zeros(size, size, dtype=torch.bool)
    patch[4 : size - 4, 4 : size - 4] = True
    noise = torch.randint(0, 60, (n, size, size), generator=generator)
    return (noise + 170 * (stripes & patch)).to(torch.uint8)
