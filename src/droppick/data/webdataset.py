"""WebDataset tar shards as training data: ``--dataset wds:DIR``, read with Python's ``tarfile``.

DIR holds ``train-*.tar`` and ``test-*.tar`` (or ``val-*.tar``) in the WebDataset convention: the
members of a sample share a key (the member name up to the first dot of its file name) and follow
one another; the image is ``KEY.png``, ``KEY.jpg`` or ``KEY.jpeg`` and its class index ``KEY.cls``
(ASCII digits); other members (``KEY.json``, ...) are ignored. Sample i is the i-th sample of the
shards sorted by name.

Opening a split reads every shard's tar headers and ``.cls`` members once (about 512 bytes per
member, the image data seeked over), so the labels are known before training, as DaP's policies
and the stratified slices need. An epoch then reads sequentially, as tar allows: each shard that
holds a sample of the order is read once, front to back, in the main process; a sample outside
the order is skipped before it is decoded (on a local disk its data is seeked over, its headers
are read), and the bytes of the samples in it go to the DataLoader workers, which decode them.
``take_counts`` reports what that cost: ``bytes_read`` and ``samples_skipped``.
"""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch.utils.data import Dataset

from .shards import image_from_bytes

PREFIX = "wds:"
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg")
TEST_SPLITS = ("test", "val")


def is_wds(dataset: str) -> bool:
    return dataset.startswith(PREFIX)


def find_shards(spec: str) -> dict[str, list[Path]]:
    """``{"train": [...], "test": [...]}``: the shards of ``wds:DIR``, sorted by name."""
    root = Path(spec[len(PREFIX):]).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--dataset {spec}: {root} is not a folder; give one holding train-*.tar and "
                                "test-*.tar (or val-*.tar), as `droppick convert --to wds` writes")
    shards = {split: sorted(root.glob(f"{split}-*.tar")) for split in ("train", *TEST_SPLITS)}
    test = next((split for split in TEST_SPLITS if shards[split]), None)
    if not shards["train"] or test is None:
        missing = " and ".join(f"{name}-*.tar" for name, found in (("train", shards["train"]), ("test", test)) if not found)
        raise FileNotFoundError(f"--dataset {spec}: {root} holds no {missing} (the evaluation split may be "
                                "val-*.tar instead of test-*.tar)")
    return {"train": shards["train"], "test": shards[test]}


def _key_and_extension(name: str) -> Optional[tuple[str, str]]:
    """WebDataset's split of a member name: the key runs to the first dot of the file name."""
    folder, _, file_name = name.rpartition("/")
    stem, dot, extension = file_name.partition(".")
    if not dot or not stem:
        return None
    return (f"{folder}/{stem}" if folder else stem), extension.lower()


class _CountedFile:
    """A binary file that counts the bytes read from it (seeks are free)."""

    def __init__(self, file):
        self.file, self.bytes_read = file, 0

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, *args) -> int:
        return self.file.seek(*args)

    def tell(self) -> int:
        return self.file.tell()


def _samples(path: Path, file) -> Iterator[tuple[str, tarfile.TarFile, dict[str, tarfile.TarInfo]]]:
    """``(key, tar, {extension: member})`` per sample of the shard, in order; a member's data is read
    only if the caller extracts it (``tarfile`` seeks over the rest)."""
    with tarfile.open(fileobj=file, mode="r:") as tar:
        key, members, seen = None, {}, set()
        for member in tar:
            parts = _key_and_extension(member.name) if member.isfile() else None
            if parts is None:
                continue
            if parts[0] != key:
                if key is not None:
                    yield key, tar, members
                if parts[0] in seen:
                    raise ValueError(f"{path}: the members of sample {parts[0]!r} are not next to each other; a "
                                     "WebDataset shard keeps each sample's files together")
                key, members = parts[0], {}
                seen.add(key)
            members[parts[1]] = member
        if key is not None:
            yield key, tar, members


def _image_member(path: Path, key: str, members: dict) -> tarfile.TarInfo:
    image = next((members[e] for e in IMAGE_EXTENSIONS if e in members), None)
    if image is None or "cls" not in members:
        wanted = " and ".join(w for w, ok in (("an image (.png, .jpg or .jpeg)", image is not None),
                                              ("a class index (.cls)", "cls" in members)) if not ok)
        raise ValueError(f"{path}: sample {key!r} has the members {sorted(members)} but no {wanted}")
    return image


class TarShards(Dataset):
    """The samples of some tar shards: ``classes``, ``targets`` and ``chunk_of`` (each sample's shard)
    like the other sources, and ``read``/``decode`` for the sequential reading of ``FolderSplit``
    (``__getitem__`` is not offered: a tar shard is read front to back)."""

    def __init__(self, shards: list[Path], skip_unreadable: bool = False, encoded: bool = False):
        self.shards, self.skip_unreadable, self.encoded = list(shards), skip_unreadable, encoded
        self.keys: list[str] = []
        self.targets: list[int] = []
        shard_sizes = []
        for path in self.shards:
            before = len(self.keys)
            with open(path, "rb") as file:
                for key, tar, members in _samples(path, file):
                    _image_member(path, key, members)
                    text = tar.extractfile(members["cls"]).read().decode("ascii", "replace").strip()
                    if not text.isdigit():
                        raise ValueError(f"{path}: {key}.cls holds {text[:20]!r}, not a class index (digits)")
                    self.keys.append(key)
                    self.targets.append(int(text))
            shard_sizes.append(len(self.keys) - before)
        if not self.keys:
            raise ValueError(f"the shards {[str(p) for p in self.shards]} hold no samples")
        self.chunk_of = torch.repeat_interleave(torch.arange(len(self.shards)), torch.tensor(shard_sizes))
        self.first = torch.tensor([0, *shard_sizes]).cumsum(0).tolist()  # index of each shard's first sample
        self.classes = [str(c) for c in range(max(self.targets) + 1)]
        self.bytes_read = self.skipped = self.shards_read = 0

    def __len__(self) -> int:
        return len(self.keys)

    def path_of(self, index: int) -> str:
        return f"{self.shards[int(self.chunk_of[index])]}:{self.keys[index]}"

    def read(self, indices: torch.Tensor) -> Iterator[tuple[int, bytes]]:
        """``(index, image bytes)`` for each of ``indices`` in turn. A shard is read when the first of
        its samples comes up, once: the bytes of all its samples in ``indices`` are kept until they
        come up, so an order that keeps a shard's samples together (the chunk-aware one) keeps a
        window of shards' bytes in memory, and any other order at most all of them."""
        wanted = Counter(indices.tolist())
        held: dict[int, bytes] = {}
        for index in indices.tolist():
            if index not in held:
                self._read_shard(int(self.chunk_of[index]), wanted, held)
            data = held[index]
            wanted[index] -= 1
            if not wanted[index]:
                del held[index]
            yield index, data

    def _read_shard(self, shard: int, wanted: Counter, held: dict) -> None:
        path = self.shards[shard]
        with open(path, "rb") as raw:
            file = _CountedFile(raw)
            for index, (key, tar, members) in enumerate(_samples(path, file), start=self.first[shard]):
                if index >= self.first[shard + 1] or key != self.keys[index]:
                    raise ValueError(f"{path} changed since it was indexed (sample {index} is now {key!r}); "
                                     "start the run again")
                if wanted[index]:
                    held[index] = tar.extractfile(_image_member(path, key, members)).read()
                else:
                    self.skipped += 1  # its headers were read, its data seeked over, nothing decoded
            self.bytes_read += file.bytes_read
        self.shards_read += 1

    def decode(self, payload: tuple[int, bytes]) -> tuple[Any, int]:
        """``(image, label)`` of a payload of ``read`` (in a DataLoader worker)."""
        index, data = payload
        return image_from_bytes(data, self.path_of(index), self.encoded, self.skip_unreadable), self.targets[index]

    def take_counts(self) -> dict:
        """Since the last call: ``chunks_read`` (shards read), ``samples_skipped`` (read past, not
        decoded) and ``bytes_read``."""
        counts = {"chunks_read": self.shards_read, "samples_skipped": self.skipped, "bytes_read": self.bytes_read}
        self.bytes_read = self.skipped = self.shards_read = 0
        return counts
