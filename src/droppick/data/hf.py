"""Hugging Face ``datasets`` as training data: ``--dataset hf:PATH``.

PATH is either a ``DatasetDict`` written by ``save_to_disk`` (with ``train`` and ``test`` splits)
or a folder of parquet files in the Hub's layout (``data/train-00000-of-00001.parquet``, ...),
read with ``load_dataset(PATH)``; nothing is downloaded. The test split is ``test``, else
``validation`` or ``val`` (ImageNet's Hub copies name it so).

The image and label columns are found by their feature types, ``datasets.Image`` and
``datasets.ClassLabel`` (a label column of plain integers is taken when it is the only other
integer column named ``label``/``labels``); ``image_column=...``/``label_column=...`` name them
instead. Rows are read one at a time by index, so only the current subset's images are ever
decoded, by the same workers, transforms and device decoder as an ImageFolder tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.data import Dataset

from .datasets import unreadable_image

PREFIX = "hf:"
TEST_SPLITS = ("test", "validation", "val")
LABEL_NAMES = ("label", "labels")


def is_hf(dataset: str) -> bool:
    return dataset.startswith(PREFIX)


def _datasets():
    try:
        import datasets
    except ImportError as err:
        raise ImportError("--dataset hf:PATH needs Hugging Face datasets: pip install 'droppick[hf]'") from err
    return datasets


def load_dataset_dict(spec: str) -> dict:
    """``{"train": Dataset, "test": Dataset}`` of ``hf:PATH``."""
    datasets = _datasets()
    path = Path(spec[len(PREFIX):]).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--dataset {spec}: {path} is not a folder; give a DatasetDict saved with "
                                "save_to_disk, or a folder of parquet files in the Hub's layout (data/train-*.parquet)")
    if (path / "dataset_dict.json").exists():
        splits = datasets.load_from_disk(str(path))
    elif any(path.rglob("*.parquet")):
        splits = datasets.load_dataset(str(path))
    else:
        raise FileNotFoundError(f"--dataset {spec}: {path} holds neither a saved DatasetDict (dataset_dict.json) "
                                "nor parquet files")
    if "train" not in splits or not any(name in splits for name in TEST_SPLITS):
        raise ValueError(f"--dataset {spec} has the splits {sorted(splits)}; droppick needs 'train' and one of "
                         f"{', '.join(TEST_SPLITS)}")
    return dict(splits)


def test_split(splits: dict, spec: str, image_column: str, label_column: str):
    """The evaluation split: the first of ``TEST_SPLITS`` with both columns and labels (the Hub's
    ImageNet copies hold a ``test`` split of unlabelled images, label -1, beside ``validation``)."""
    seen = []
    for name in (n for n in TEST_SPLITS if n in splits):
        split = splits[name]
        if image_column in split.column_names and label_column in split.column_names:
            if min(split[label_column], default=0) >= 0:
                return split
            seen.append(f"{name} (labels of -1: unlabelled)")
        else:
            seen.append(f"{name} (columns {split.column_names})")
    raise ValueError(f"--dataset {spec}: no split to evaluate on with the columns {image_column!r} and "
                     f"{label_column!r} and real labels; looked at {'; '.join(seen)}")


def image_and_label_columns(features, image_column: Optional[str], label_column: Optional[str]) -> tuple[str, str]:
    """The image and label column names: given ones are checked, missing ones found by feature type."""
    datasets = _datasets()

    def usable(kind: str, feature) -> bool:
        if kind == "image":
            return isinstance(feature, datasets.Image)
        return isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value)
                                                             and feature.dtype.startswith("int"))

    found = {"image": [n for n, f in features.items() if usable("image", f)],
             "label": [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
             or [n for n, f in features.items() if n in LABEL_NAMES and usable("label", f)]}
    kinds = {"image": "images (a datasets.Image column)", "label": "class ids (a ClassLabel or integer column)"}
    chosen = []
    for kind, given in (("image", image_column), ("label", label_column)):
        if given is not None:
            if given not in features:
                raise ValueError(f"{kind}_column={given!r} is not a column; the columns are {list(features)}")
            if not usable(kind, features[given]):
                raise ValueError(f"{kind}_column={given!r} holds {features[given]}, not {kinds[kind]}")
            chosen.append(given)
        elif len(found[kind]) == 1:
            chosen.append(found[kind][0])
        else:
            what = "none" if not found[kind] else f"{found[kind]}"
            raise ValueError(f"cannot tell the {kind} column by its type (found {what} among {list(features)}): "
                             f"name it with --set {kind}_column=NAME")
    return chosen[0], chosen[1]


class HFImages(Dataset):
    """One split of a Hugging Face dataset yielding ``(transform(image), label)``, like ``FolderDataset``.

    ``encoded=True`` yields the image's stored bytes as a uint8 tensor instead (``--decode device``).
    ``reads`` counts the rows read in this process.
    """

    def __init__(self, split, image_column: str, label_column: str, transform: Callable[[Any], Any] | None = None,
                 skip_unreadable: bool = False, encoded: bool = False, name: str = "hf"):
        datasets = _datasets()
        self.name, self.image_column, self.transform = name, image_column, transform
        self.skip_unreadable, self.encoded, self.reads = skip_unreadable, encoded, 0
        label_feature = split.features[label_column]
        self.targets: list[int] = [int(label) for label in split[label_column]]  # reads that column only
        self.classes = (list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel)
                        else [str(c) for c in range(max(self.targets, default=-1) + 1)])
        # Only the image column is read per row; decode=False hands over the stored bytes, decoded here.
        self.rows = split.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))

    def __len__(self) -> int:
        return len(self.targets)

    def path_of(self, index: int) -> str:
        stored = self.rows[int(index)][self.image_column]
        return stored.get("path") or f"{self.name}[{index}]"

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        self.reads += 1
        stored, label = self.rows[index][self.image_column], self.targets[index]
        data = stored.get("bytes")
        if data is None and stored.get("path") and os.path.exists(stored["path"]):
            with open(stored["path"], "rb") as f:
                data = f.read()
        if self.encoded:
            if data is None:
                return self._unreadable(index, ValueError("no bytes stored")), label
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), label
        try:
            import io

            with Image.open(io.BytesIO(data)) as image:
                image = image.convert("RGB")  # forces the full decode, so truncation surfaces here
        except (OSError, ValueError, TypeError, Image.DecompressionBombError) as err:
            return self._unreadable(index, err), label
        return (self.transform(image) if self.transform else image), label

    def _unreadable(self, index: int, err: Exception) -> None:
        if self.skip_unreadable:
            return None
        raise unreadable_image(self.path_of(index), err) from err
