"""``droppick convert``: Fashion-MNIST or an ImageFolder tree as WebDataset shards or a litdata dataset.

Sample i of a split is the source's sample i (Fashion-MNIST in its files' order, an ImageFolder tree
in ``FolderDataset``'s: classes, then files, sorted by name), so a run on the converted data numbers
its samples, draws its slices and records its subsets exactly as a run on the source does. Images are
stored encoded, as the source holds them: an ImageFolder's PNG and JPEG files byte for byte (another
format is re-encoded as PNG), Fashion-MNIST's pixels as lossless PNG. Each sample's class index is
stored beside it (``KEY.cls`` in a shard, ``cls`` in a litdata item, and litdata's ``labels.json``).

``to="wds"``: OUT/SPLIT-NNNNNN.tar, ``per_chunk`` samples a shard, KEY the sample's index (8 digits).
``to="litdata"``: OUT/SPLIT/, written by litdata's ``BinaryWriter``, ``per_chunk`` samples a chunk.
SPLIT is train and test (Fashion-MNIST) or train and val (an ImageFolder tree's names).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Iterator, Optional

from .chunked import LABELS_FILE, _litdata

FORMATS = ("wds", "litdata")
SOURCES = ("fashion-mnist", "imagefolder")
Sample = tuple[bytes, str, int]  # (encoded image, its extension, class index)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _fashion_mnist(root: Path, split: str) -> Iterator[Sample]:
    from PIL import Image

    from .in_memory import load_fashion_mnist

    images, labels = load_fashion_mnist(root, split)
    for pixels, label in zip(images[:, 0].numpy(), labels.tolist()):
        yield _png(Image.fromarray(pixels)), "png", label  # uint8 [H, W]: a grey image


def _image_folder(root: Path) -> Iterator[Sample]:
    from PIL import Image

    from .datasets import FolderDataset

    for path, label in FolderDataset(root).samples:
        extension = Path(path).suffix.lower().lstrip(".")
        if extension in ("png", "jpg", "jpeg"):
            yield Path(path).read_bytes(), extension, label
        else:
            with Image.open(path) as image:
                yield _png(image), "png", label


def source_splits(dataset: str, data_dir: Optional[str]) -> dict[str, Iterator[Sample]]:
    """``{split name: its samples}`` of ``dataset``, read lazily in the source's order."""
    if dataset == "fashion-mnist":
        from .in_memory import find_fashion_mnist

        root = find_fashion_mnist(data_dir)
        return {split: _fashion_mnist(root, split) for split in ("train", "test")}
    if dataset == "imagefolder":
        from .datasets import find_imagefolder

        if data_dir is None:
            raise ValueError("convert --dataset imagefolder needs --data-dir pointing at a folder with train/ and val/")
        train, val = find_imagefolder(data_dir)
        return {"train": _image_folder(train), "val": _image_folder(val)}
    raise ValueError(f"convert reads {' or '.join(SOURCES)}, not {dataset!r}")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644  # mtime 0: the same data gives the same bytes
    tar.addfile(info, io.BytesIO(data))


def write_wds(samples: Iterator[Sample], out: Path, split: str, per_chunk: int) -> int:
    tar, count = None, 0
    try:
        for index, (data, extension, label) in enumerate(samples):
            if index % per_chunk == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(out / f"{split}-{index // per_chunk:06d}.tar", "w")
            _add(tar, f"{index:08d}.{extension}", data)
            _add(tar, f"{index:08d}.cls", str(label).encode())
            count = index + 1
    finally:
        if tar is not None:
            tar.close()
    return count


def write_litdata(samples: Iterator[Sample], folder: Path, per_chunk: int) -> int:
    _litdata()  # the install hint, if it is missing
    from litdata.streaming.writer import BinaryWriter

    writer, labels = BinaryWriter(str(folder), chunk_size=per_chunk), []
    for index, (data, _, label) in enumerate(samples):
        writer[index] = {"image": data, "cls": label}
        labels.append(label)
    writer.done()
    writer.merge()
    (folder / LABELS_FILE).write_text(json.dumps(labels) + "\n")  # the labels without reading every item
    return len(labels)


def convert(dataset: str, to: str, out: str, data_dir: Optional[str] = None, per_chunk: int = 1000) -> dict[str, int]:
    """Write ``dataset`` (in ``data_dir``) to the folder ``out`` in the format ``to``; returns the
    samples written per split. ``out`` must not exist yet, or be empty."""
    if to not in FORMATS:
        raise ValueError(f"convert writes {' or '.join(FORMATS)}, not {to!r}")
    if per_chunk < 1:
        raise ValueError(f"per_chunk must be >= 1 (samples per tar shard or litdata chunk), got {per_chunk}")
    out_dir = Path(out).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} exists and is not an empty folder; convert never overwrites: remove it or "
                              "choose another --out")
    if to == "litdata":
        _litdata()
    splits = source_splits(dataset, data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, samples in splits.items():
        if to == "wds":
            written[split] = write_wds(samples, out_dir, split, per_chunk)
        else:
            (out_dir / split).mkdir()
            written[split] = write_litdata(samples, out_dir / split, per_chunk)
    return written
