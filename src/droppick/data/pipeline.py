"""The trainer's data: which split to load, and how an epoch's sample order becomes batches.

Everything here takes plain arguments: the data package stands below the trainer and imports
nothing from it (``droppick.train.splits.build_splits`` reads a ``TrainConfig`` and calls
``load_splits``).

Two kinds of split share one interface, ``batches(order, batch_size, seed, epoch)`` yielding
``(indices, images, targets)``:

- ``InMemorySplit`` for small datasets (Fashion-MNIST, CIFAR) kept as uint8 tensors on the
  training device (the GPU when training there): each epoch's shard goes to the device once, and a
  batch is a gather plus a batched crop/flip there, drawn from a generator on that device; no
  DataLoader and no per-batch host work. On the CPU it is the same code with device=cpu.
- ``FolderSplit`` (``folder_split.py``) for ImageFolder trees (ImageNet): one DataLoader for the
  whole run, its workers kept alive across epochs, decodes only the samples in the order, so a
  dropped sample is never read.
- ``ChunkedSplit`` (``shards.py``), a ``FolderSplit`` for the chunked formats ``litdata:DIR``
  (``chunked.py``) and ``wds:DIR`` (``webdataset.py``): it reads in a chunk-aware order and counts
  the chunks, bytes and samples each epoch read.

Augmentation randomness comes from generators seeded by (seed, epoch[, sample]) in both, so an
epoch redone after a resume is identical, whatever the number of DataLoader workers.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from . import in_memory as dp_data
from .folder_split import FolderSplit
from . import datasets as dp_datasets
from ..seeding import derive_seed, generator
from .hf import HFImages, image_and_label_columns, is_hf, load_dataset_dict, test_split
from . import chunked, webdataset
from .shards import ChunkedSplit, SequentialStream

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# (labels, "train" or "test") -> the indices of the split to keep, or None for all of it
Select = Callable[[torch.Tensor, str], Optional[torch.Tensor]]


class InMemorySplit:
    def __init__(self, images: dp_data.InMemoryImages, augment: bool, *, num_classes: int, padding: int = 4,
                 flip: bool = True, clean_labels: Optional[torch.Tensor] = None):
        self.images, self.augment, self.padding, self.flip = images, augment, padding, flip
        self.num_classes = num_classes
        self.labels = images.labels.cpu()  # for the policies and reports; batches use the device copy
        self.clean_labels = clean_labels  # the labels before --label-noise changed some (None: none changed)
        self.in_channels = images.images.shape[1]
        self.batched = 0  # samples batched since the last take_counts

    @property
    def flipped(self) -> torch.Tensor:
        """Sorted indices whose label --label-noise changed (empty without noise)."""
        if self.clean_labels is None:
            return torch.zeros(0, dtype=torch.int64)
        return (self.labels != self.clean_labels).nonzero().squeeze(1)

    def __len__(self) -> int:
        return len(self.images)

    def take_unreadable(self) -> list[int]:
        return []  # decoded whole before training: nothing can turn out unreadable

    def take_counts(self) -> dict:
        """``samples_decoded``: the samples batched since the last call (decoded once, before training,
        and gathered from memory since); nothing is skipped."""
        batched, self.batched = self.batched, 0
        return {"samples_decoded": batched, "samples_skipped": 0}

    def prefetch(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int) -> None:
        pass  # nothing to load ahead: the data is in memory

    def batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
        """``(indices, images, targets)``: indices on the CPU (what ``DropAndPick.record`` takes),
        images and targets on the data's device."""
        device = self.images.images.device
        gen = generator(seed, epoch, "augment", device=device) if self.augment else None
        on_device = order.to(device, non_blocking=True)  # the whole shard in one copy per epoch
        self.batched += order.numel()
        for indices, rows in zip(order.split(batch_size), on_device.split(batch_size)):
            images, targets = self.images.batch(rows, gen, padding=self.padding, flip=self.flip)
            yield indices, images, targets


def slice_split(labels: torch.Tensor, split: str, seed: int, per_class: Optional[int] = None,
                samples: Optional[int] = None, imbalance: Optional[float] = None) -> Optional[torch.Tensor]:
    """Indices to keep from a split with these ``labels``: ``per_class`` samples of each class
    first, then a class-stratified ``samples`` of what is left, then a long tail of ``imbalance``
    (largest class over smallest) of that, each drawn from ``seed``; None when none is set (all of
    the split)."""
    keep = None
    if per_class is not None:
        keep = dp_datasets.per_class_subsample(labels, per_class, derive_seed(seed, "per-class"))
    if samples is not None:
        pool = labels if keep is None else labels[keep]
        if samples > len(pool):
            raise ValueError(f"{split}_samples={samples} but the {split} split has only {len(pool)} samples")
        inner = dp_data.stratified_slice(pool, samples, derive_seed(seed, f"{split}-slice"))
        keep = inner if keep is None else keep[inner]
    if imbalance is not None:
        inner = dp_datasets.long_tail(labels if keep is None else labels[keep], imbalance,
                                      derive_seed(seed, "long-tail"))
        keep = inner if keep is None else keep[inner]
    return keep


def _in_memory_splits(load: Callable[[str], tuple[torch.Tensor, torch.Tensor]], num_classes: int, select: Select,
                      device: torch.device, padding: int, flip: bool):
    train_images = test_images = None
    for split in ("train", "test"):
        images, labels = load(split)
        keep = select(labels, split)
        if keep is not None:
            images, labels = images[keep], labels[keep]
        if split == "train":
            train_images = dp_data.InMemoryImages(images, labels)
        else:  # normalise the test split with the training statistics
            test_images = dp_data.InMemoryImages(images, labels, mean=train_images.mean, std=train_images.std)
    train_images, test_images = train_images.to(device), test_images.to(device)  # once, for the whole run
    return (InMemorySplit(train_images, True, num_classes=num_classes, padding=padding, flip=flip),
            InMemorySplit(test_images, False, num_classes=num_classes))


def load_splits(dataset: str, data_dir: Optional[str], select: Select, *, device: torch.device | str = "cpu",
                padding: int = 4, flip: bool = True, image_size: int = 224, eval_resize: int = 256,
                decode: str = "workers", skip_unreadable: bool = False, num_workers: int = 0,
                pin_memory: bool = False, image_column: Optional[str] = None,
                label_column: Optional[str] = None, chunk_window: int = 8) -> tuple:
    """(train, test) splits of ``dataset``, the samples ``select`` keeps; in-memory data lives on
    ``device``. ``padding`` and ``flip`` are the in-memory training augmentation; the rest applies
    to data read image by image, an ImageFolder tree or ``hf:PATH`` (whose columns the last two name),
    ``litdata:DIR`` or ``wds:DIR`` (whose training order shuffles ``chunk_window`` chunks together)."""
    device = torch.device(device)
    if dataset == "fashion-mnist":
        root = dp_data.find_fashion_mnist(data_dir)
        return _in_memory_splits(lambda split: dp_data.load_fashion_mnist(root, split),
                                 dp_data.FASHION_MNIST_NUM_CLASSES, select, device, padding, flip)
    if dataset in ("cifar10", "cifar100"):
        root = dp_datasets.find_cifar(dataset, data_dir)
        return _in_memory_splits(lambda split: dp_datasets.load_cifar(root, dataset, split),
                                 dp_datasets.CIFAR_NUM_CLASSES[dataset], select, device, padding, flip)
    if dataset == "imagefolder":
        if data_dir is None:
            raise ValueError("dataset imagefolder needs --data-dir pointing at a folder with train/ and val/")
        roots = dict(zip(("train", "test"), dp_datasets.find_imagefolder(data_dir)))

        def source(split: str, encoded: bool, skip: bool):
            return dp_datasets.FolderDataset(roots[split], skip_unreadable=skip, encoded=encoded)
    elif is_hf(dataset):
        tables = load_dataset_dict(dataset)
        columns = image_and_label_columns(tables["train"].features, image_column, label_column)
        tables = {"train": tables["train"], "test": test_split(tables, dataset, *columns)}

        def source(split: str, encoded: bool, skip: bool):
            return HFImages(tables[split], *columns, skip_unreadable=skip, encoded=encoded, name=f"{dataset} {split}")
    elif chunked.is_litdata(dataset):
        folders = chunked.find_splits(dataset)

        def source(split: str, encoded: bool, skip: bool):
            return chunked.LitImages(folders[split], skip_unreadable=skip, encoded=encoded)
    elif webdataset.is_wds(dataset):
        shards = webdataset.find_shards(dataset)

        def source(split: str, encoded: bool, skip: bool):
            return webdataset.TarShards(shards[split], skip_unreadable=skip, encoded=encoded)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    return _streamed_splits(source, select, image_size, eval_resize, decode, skip_unreadable, num_workers,
                            pin_memory, device, chunk_window)


def _streamed_splits(source: Callable, select: Select, image_size: int, eval_resize: int, decode: str,
                     skip_unreadable: bool, num_workers: int, pin_memory: bool, device: torch.device,
                     chunk_window: int = 8):
    """Splits read image by image: ``source(split, encoded, skip_unreadable)`` is the split's dataset;
    one with ``chunk_of`` (a chunked format) gets a ``ChunkedSplit``, read by its ``stream`` if it
    has ``read`` (a sequential format)."""
    # Imported here: torchvision (with torch._dynamo under it) adds about 3.5 s to the start of
    # every process, the CLI and each DDP rank, and in-memory datasets do not use it.
    from . import transforms as dp_transforms
    from .device_decode import DeviceDecoder

    on_device = decode == "device"  # the workers only read bytes; the device decodes and augments
    pipelines = {  # (per image in the workers, geometry on the device)
        "train": (dp_transforms.imagenet_train_transform, dp_transforms.imagenet_train_geometry, (image_size,)),
        "test": (dp_transforms.imagenet_eval_transform, dp_transforms.imagenet_eval_geometry,
                 (eval_resize, image_size)),
    }
    splits = []
    for split in ("train", "test"):
        per_image, geometry, sizes = pipelines[split]
        transform = None if on_device else per_image(*sizes)
        decoder = DeviceDecoder(geometry(*sizes), device) if on_device else None
        dataset = source(split, on_device, skip_unreadable and split == "train")
        num_classes = len(dataset.classes)  # all classes, even if a slice leaves one empty
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
        keep = select(labels, split)
        base = dataset
        if keep is not None:
            dataset, labels = torch.utils.data.Subset(dataset, keep.tolist()), labels[keep]
        args = (dataset, labels, transform, num_workers, pin_memory, num_classes)
        if not hasattr(base, "chunk_of"):
            splits.append(FolderSplit(*args, decoder=decoder))
            continue
        stream = SequentialStream(base, keep) if hasattr(base, "read") else None
        splits.append(ChunkedSplit(*args, decoder=decoder, stream=stream, source=base, window=chunk_window,
                                   chunk_of=base.chunk_of if keep is None else base.chunk_of[keep]))
    return tuple(splits)
