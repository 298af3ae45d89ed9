"""CIFAR-10/100 (python pickle format) and ImageFolder trees (ImageNet layout), plus tiny fakes for tests.

CIFAR loads whole into memory and pairs with ``droppick.data.in_memory.InMemoryImages``, which also
computes the normalisation statistics from the training images; ``CIFAR_MEAN``/``CIFAR_STD``
are the published values of the real training sets, for per-image pipelines that have no
whole-dataset tensor to measure (see ``droppick.data.transforms.cifar_pil_train_transform``).

ImageFolder trees are too large for memory, so ``FolderDataset`` decodes one file per
``__getitem__``: a sample that Drop-and-Pick drops is never read from disk.

torchvision and Pillow are imported only by the folder functions, so CIFAR works without them.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

CIFAR_DIRS: dict[str, str] = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_MEAN: dict[str, tuple[float, float, float]] = {
    "cifar10": (0.4914, 0.4822, 0.4465),
    "cifar100": (0.5071, 0.4865, 0.4409),
}
CIFAR_STD: dict[str, tuple[float, float, float]] = {
    "cifar10": (0.2470, 0.2435, 0.2616),
    "cifar100": (0.2673, 0.2564, 0.2762),
}
_CIFAR_FILES: dict[str, dict[str, list[str]]] = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}
_CIFAR_LABEL_KEY = {"cifar10": "labels", "cifar100": "fine_labels"}
CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _check_cifar_name(name: str) -> None:
    if name not in CIFAR_DIRS:
        raise ValueError(f"unknown CIFAR dataset {name!r}; use one of {sorted(CIFAR_DIRS)}")


def _cifar_files(name: str) -> list[str]:
    return [f for files in _CIFAR_FILES[name].values() for f in files]


def find_cifar(name: str, data_dir: str | os.PathLike | None) -> Path:
    """The extracted CIFAR folder: ``data_dir`` itself or ``data_dir / CIFAR_DIRS[name]``."""
    _check_cifar_name(name)
    folder, needed = CIFAR_DIRS[name], _cifar_files(name)
    archive = _CIFAR_ARCHIVES[name]
    if data_dir is None:
        raise FileNotFoundError(
            f"{name} needs --data-dir: download the python version ({archive}) from {_CIFAR_URL}, extract it "
            f"with `tar -xzf {archive} -C DIR` and pass --data-dir DIR (or DIR/{folder})"
        )
    data_dir = Path(data_dir)
    # The named subfolder wins, so a parent that happens to hold stray files is not mistaken for it.
    for candidate in (data_dir / folder, data_dir):
        if all((candidate / f).is_file() for f in needed):
            return candidate
    present = data_dir / folder if (data_dir / folder).is_dir() else data_dir
    missing = [f for f in needed if not (present / f).is_file()]
    raise FileNotFoundError(
        f"{name} not found: expected {data_dir / folder}/ (or --data-dir pointing at that folder) holding "
        f"{', '.join(needed)}; {present} lacks {', '.join(missing)}. Download the python version "
        f"({archive}) from {_CIFAR_URL} and extract it into --data-dir, e.g. `tar -xzf {archive} -C {data_dir}`."
    )


def _unpickle(path: Path) -> dict[str, Any]:
    # Python 2 pickles: latin1 maps their byte strings 1:1 onto str, exactly as torchvision does.
    # Unpickling runs code from the file, so only point this at the official archive.
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a CIFAR python pickle ({err}); re-extract the official archive") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(entry).__name__}")
    return entry


def load_cifar(root: str | os.PathLike, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a split ("train" or "test") as uint8 images ``[N,3,32,32]`` (RGB) and int64 labels ``[N]``.

    ``root`` is the folder ``find_cifar`` returns. Rows of ``data`` are channel-major
    (1024 red, then green, then blue values), so a reshape gives CHW with no transpose.
    """
    _check_cifar_name(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    key, num_classes = _CIFAR_LABEL_KEY[name], CIFAR_NUM_CLASSES[name]
    images, labels = [], []
    for file_name in _CIFAR_FILES[name][split]:
        path = Path(root) / file_name
        entry = _unpickle(path)
        if "data" not in entry or key not in entry:
            raise ValueError(f"{path}: needs keys 'data' and {key!r}, found {sorted(entry)}; is this {name}?")
        data = np.asarray(entry["data"])
        try:
            file_labels = np.asarray(entry[key], dtype=np.int64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {key!r} must be a list of integers ({err})") from err
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
            raise ValueError(f"{path}: 'data' must be uint8 [N, {_CIFAR_PIXELS}], found {data.dtype} {data.shape}")
        if file_labels.shape != (len(data),):
            raise ValueError(f"{path}: {len(data)} images but {key!r} has shape {file_labels.shape}")
        bad = np.unique(file_labels[(file_labels < 0) | (file_labels >= num_classes)])
        if bad.size:
            raise ValueError(f"{path}: {key!r} must lie in 0..{num_classes - 1}, found {bad.tolist()}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.from_numpy(file_labels))
    return torch.cat(images), torch.cat(labels)


def write_fake_cifar(root: str | os.PathLike, name: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Test/demo helper: write a tiny, learnable CIFAR in the official on-disk format; returns its folder.

    Class ``c`` is a seeded per-class colour over noise with stripes of period ``2 + c % 4``;
    both survive crops and flips. Labels cycle over the classes in seeded order.
    """
    _check_cifar_name(name)
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    folder = Path(root) / CIFAR_DIRS[name]
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    num_classes = CIFAR_NUM_CLASSES[name]
    colours = torch.randint(40, 216, (num_classes, 3, 1, 1), generator=generator)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
        stripes = (torch.arange(32) % (2 + labels % 4)[:, None] == 0)[:, None, None, :]
        noise = torch.randint(-30, 31, (n, 3, 32, 32), generator=generator)
        images = (colours[labels] + noise + 60 * stripes).clamp(0, 255).to(torch.uint8)
        files = _CIFAR_FILES[name][split]
        for file_name, part in zip(files, torch.arange(n).tensor_split(len(files))):
            entry = {
                "batch_label": f"fake {file_name}",
                "data": images[part].reshape(-1, _CIFAR_PIXELS).numpy(),
                _CIFAR_LABEL_KEY[name]: labels[part].tolist(),
                "filenames": [f"fake_{i}.png" for i in part.tolist()],
            }
            if name == "cifar100":
                entry["coarse_labels"] = (labels[part] // 5).tolist()
            with open(folder / file_name, "wb") as f:
                pickle.dump(entry, f, protocol=2)
    meta_name, meta_key = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    with open(folder / meta_name, "wb") as f:
        pickle.dump({meta_key: [f"class_{c}" for c in range(num_classes)]}, f, protocol=2)
    return folder


def per_class_subsample(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices keeping exactly ``per_class`` seeded-random samples of every class.

    Paper Section 4.2.3: CIFAR10-5000 is ``per_class_subsample(labels, 500, seed)``.
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = labels.cpu()
    classes, counts = labels.unique(sorted=True, return_counts=True)
    short = [(c, n) for c, n in zip(classes.tolist(), counts.tolist()) if n < per_class]
    if short:
        listed = ", ".join(f"class {c} has {n}" for c, n in short)
        raise ValueError(f"per_class={per_class} exceeds the samples available ({listed}); lower per_class")
    return _first_of_each_class(labels, torch.full_like(counts, per_class), seed)


def long_tail(labels: torch.Tensor, ratio: float, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded long tail: with m the smallest class's count and the classes in a
    seeded order, the class of rank r keeps round(m x ratio^(-r / (K - 1))) of its samples, so the
    largest class keeps m and the smallest m / ratio (an exponential profile, the usual long-tailed
    CIFAR construction). ``ratio`` >= 1; 1 keeps m of every class."""
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if not ratio >= 1:  # NaN fails too
        raise ValueError(f"imbalance must be >= 1 (the largest class's size over the smallest's), got {ratio}")
    labels = labels.cpu()
    classes, counts = labels.unique(sorted=True, return_counts=True)
    k, m = len(classes), int(counts.min())
    order = torch.randperm(k, generator=torch.Generator().manual_seed(seed))  # order[r]: the class of rank r
    quotas = torch.empty_like(counts)
    for rank, cls in enumerate(order.tolist()):
        quotas[cls] = max(1, round(m * ratio ** (-rank / max(1, k - 1))))
    return _first_of_each_class(labels, quotas, seed)


def _first_of_each_class(labels: torch.Tensor, quotas: torch.Tensor, seed: int) -> torch.Tensor:
    """Sorted indices of ``quotas[i]`` seeded-random samples of the i-th class (in sorted label order)."""
    classes, counts = labels.unique(sorted=True, return_counts=True)
    # One shuffle, then a stable sort by label: each class's members stay in shuffled order,
    # so the first quota of each group are a uniform random choice.
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(labels), generator=generator)
    grouped = shuffled[labels[shuffled].sort(stable=True).indices]
    starts = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    rank_in_class = torch.arange(len(labels)) - starts
    return grouped[rank_in_class < torch.repeat_interleave(quotas, counts)].sort().values


def unreadable_image(path: str, err: Exception) -> ValueError:
    return ValueError(f"cannot read image {path}: {err} (--skip-unreadable leaves such files out of "
                      "training and lists them in the run directory)")


class FolderDataset(Dataset):
    """An ImageFolder tree ``root/CLASS/IMAGE`` (classes sorted by name) yielding ``(transform(image), label)``.

    Only ``__getitem__`` opens files, one per call; ``reads`` counts those calls in this
    process (each DataLoader worker has its own copy). With ``encoded=True`` it yields the file's
    bytes as a uint8 tensor instead of a decoded image, for decoding on the training device
    (``droppick.data.device_decode``); ``transform`` does not apply then.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable[[Any], Any] | None = None,
                 skip_unreadable: bool = False, encoded: bool = False) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist; expected {self.root}/CLASS/IMAGE files")
        try:
            self.classes, self.class_to_idx = find_classes(self.root)
            self.samples: list[tuple[str, int]] = make_dataset(self.root, self.class_to_idx, IMG_EXTENSIONS)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{self.root} is not a usable ImageFolder tree ({err}); every class needs its own "
                f"sub-folder with at least one image ({', '.join(IMG_EXTENSIONS)})"
            ) from err
        self.targets: list[int] = [label for _, label in self.samples]
        self.transform = transform
        self.skip_unreadable = skip_unreadable  # an unreadable image yields None instead of stopping
        self.encoded = encoded
        self.reads = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        path, label = self.samples[index]
        self.reads += 1
        if self.encoded:
            return self._bytes_of(path), label
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")  # forces the full decode, so truncation surfaces here
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            if self.skip_unreadable:
                return None, label
            raise unreadable_image(path, err) from err
        return (self.transform(image) if self.transform else image), label

    def path_of(self, index: int) -> str:
        return self.samples[index][0]

    def _bytes_of(self, path: str) -> torch.Tensor | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            if self.skip_unreadable:
                return None
            raise unreadable_image(path, err) from err
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def find_imagefolder(data_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``(data_dir/train, data_dir/val)``, after checking both exist and hold the same class folders."""
    from torchvision.datasets.folder import find_classes

    data_dir = Path(data_dir)
    train, val = data_dir / "train", data_dir / "val"
    missing = [p.name for p in (train, val) if not p.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir} lacks {' and '.join(f'{m}/' for m in missing)}; --data-dir must hold train/CLASS/IMAGE "
            "and val/CLASS/IMAGE (for ImageNet, sort the validation images into class folders first)"
        )
    train_classes, val_classes = (set(find_classes(p)[0]) for p in (train, val))
    if train_classes != val_classes:
        raise ValueError(
            f"{train} and {val} must have the same class folders; only in train: "
            f"{sorted(train_classes - val_classes)}, only in val: {sorted(val_classes - train_classes)}"
        )
    return train, val


def write_fake_imagefolder(
    root: str | os.PathLike,
    classes: int,
    per_class: int,
    size: int = 48,
    split_names: Sequence[str] = ("train", "val"),
    seed: int = 0,
) -> Path:
    """Test/demo helper: write ``root/SPLIT/cNNN/iNNNN.jpg`` images, one seeded colour per class plus noise."""
    from PIL import Image

    if classes < 1 or per_class < 1 or size < 1:
        raise ValueError(f"classes, per_class and size must be >= 1, got {classes}, {per_class}, {size}")
    root = Path(root)
    generator = torch.Generator().manual_seed(seed)
    colours = torch.randint(30, 226, (classes, 1, 1, 3), generator=generator)
    for split in split_names:
        for c in range(classes):
            class_dir = root / split / f"c{c:03d}"
            class_dir.mkdir(parents=True, exist_ok=True)
            noise = torch.randint(-25, 26, (per_class, size, size, 3), generator=generator)
            pixels = (colours[c] + noise).clamp(0, 255).to(torch.uint8).numpy()
            for i, pixel_array in enumerate(pixels):
                Image.fromarray(pixel_array).save(class_dir / f"i{i:04d}.jpg", quality=90)
    return root
