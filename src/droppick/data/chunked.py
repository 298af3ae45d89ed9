"""Lightning's litdata format as training data: ``--dataset litdata:DIR`` (``pip install 'droppick[litdata]'``).

DIR holds ``train/`` and ``test/`` (or ``val/``), each a dataset that litdata wrote (``index.json``
and its chunk files): ``droppick convert --to litdata`` writes them, and so does ``litdata.optimize``
with items that are dicts of an image (encoded bytes under ``image``, ``jpg`` or ``png``) and its
class index (``cls`` or ``label``).

litdata reads a sample by its global index, so the DaP sampler's indices drive it directly and a
dropped sample is never read; its cost is per chunk (on object storage a chunk is downloaded
whole), hence the chunk-aware order of ``shards.py``. The labels must be known before training:
``labels.json`` beside ``index.json`` (the converter writes it) holds them, else one pass reads
every item once when the split is opened (its images undecoded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.data import Dataset

from .shards import image_from_bytes

PREFIX = "litdata:"
LABELS_FILE = "labels.json"
IMAGE_KEYS = ("image", "jpg", "png")
LABEL_KEYS = ("cls", "label")
TEST_SPLITS = ("test", "val")


def is_litdata(dataset: str) -> bool:
    return dataset.startswith(PREFIX)


def _litdata():
    try:
        import litdata
    except ImportError as err:
        raise ImportError("--dataset litdata:DIR needs Lightning's litdata: pip install 'droppick[litdata]'") from err
    return litdata


def find_splits(spec: str) -> dict[str, Path]:
    """``{"train": DIR/train, "test": DIR/test or DIR/val}`` of ``litdata:DIR``."""
    root = Path(spec[len(PREFIX):]).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset {spec}: {root} is not a folder; give one holding train/ and test/ (or val/), "
                                "each written by litdata, as `droppick convert --to litdata` writes")
    found = {split: root / split for split in ("train", *TEST_SPLITS) if (root / split / "index.json").is_file()}
    test = next((split for split in TEST_SPLITS if split in found), None)
    if "train" not in found or test is None:
        missing = " and ".join(f"{name}/index.json" for name, ok in (("train", "train" in found), ("test", test)) if not ok)
        raise FileNotFoundError(f"--dataset {spec}: {root} lacks {missing} (the evaluation split may be val/ instead "
                                "of test/)")
    return {"train": found["train"], "test": found[test]}


def _field(item: Any, keys: tuple[str, ...], what: str, root: Path) -> Any:
    if isinstance(item, dict):
        for key in keys:
            if key in item:
                return item[key]
    fields = sorted(item) if isinstance(item, dict) else type(item).__name__
    raise ValueError(f"{root}: an item holds {fields}, not {what} under one of {', '.join(keys)}")


class LitImages(Dataset):
    """One split written by litdata yielding ``(transform(image), label)``, like ``FolderDataset``:
    ``classes``, ``targets`` and ``chunk_of`` (each sample's chunk, from ``index.json``, for
    ``DropAndPick(chunks=Chunks(chunk_of, window))``). Each process opens its own
    ``litdata.StreamingDataset`` on its first read. ``encoded=True`` yields the image's bytes."""

    def __init__(self, root: str | os.PathLike, transform: Optional[Callable[[Any], Any]] = None,
                 skip_unreadable: bool = False, encoded: bool = False):
        self.root, self.transform = Path(root).expanduser(), transform
        self.skip_unreadable, self.encoded = skip_unreadable, encoded
        chunks = json.loads((self.root / "index.json").read_text())["chunks"]
        sizes = torch.tensor([chunk["chunk_size"] for chunk in chunks], dtype=torch.int64)
        self.chunk_of = torch.repeat_interleave(torch.arange(len(chunks)), sizes)
        self._items, self._pid = None, None
        labels = self.root / LABELS_FILE
        if labels.is_file():
            self.targets = [int(label) for label in json.loads(labels.read_text())]
        else:  # one read of every item: litdata stores the label inside it
            self.targets = [int(_field(self._reader()[i], LABEL_KEYS, "a class index", self.root)) for i in range(len(self))]
        if len(self.targets) != len(self.chunk_of):
            raise ValueError(f"{labels} holds {len(self.targets)} labels for the {len(self.chunk_of)} items of "
                             f"{self.root / 'index.json'}; write it again (droppick convert) or delete it")
        self.classes = [str(c) for c in range(max(self.targets, default=-1) + 1)]

    def __len__(self) -> int:
        return len(self.chunk_of)

    def _reader(self):
        if self._pid != os.getpid():  # a forked DataLoader worker opens its own: no file handles shared
            self._items, self._pid = _litdata().StreamingDataset(str(self.root)), os.getpid()
        return self._items

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_items": None, "_pid": None}  # a spawned worker opens its own too

    def path_of(self, index: int) -> str:
        return f"{self.root}[{int(index)}]"

    def __getitem__(self, index: int) -> tuple[Any, int]:
        item = self._reader()[int(index)]
        image = _field(item, IMAGE_KEYS, "an image", self.root)
        if not isinstance(image, (bytes, bytearray)):
            raise ValueError(f"{self.root}: item {index} holds its image as {type(image).__name__}; droppick reads "
                             "encoded bytes (write the file's bytes, as `droppick convert --to litdata` does)")
        image = image_from_bytes(bytes(image), self.path_of(index), self.encoded, self.skip_unreadable)
        if self.transform is not None and not self.encoded and image is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def take_counts(self) -> dict:
        return {}  # it reads what it is asked for, by index: the split counts that
