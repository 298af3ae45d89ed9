"""The trainer's data: which split to load, and how an epoch's sample order becomes batches.

Two kinds of split share one interface, ``batches(order, batch_size, seed, epoch)`` yielding
``(indices, images, targets)``:

- ``InMemorySplit`` for small datasets (Fashion-MNIST, CIFAR) kept as uint8 tensors on the
  training device (the GPU when training there): each epoch's shard goes to the device once, and a
  batch is a gather plus a batched crop/flip there, drawn from a generator on that device; no
  DataLoader and no per-batch host work. On the CPU it is the same code with device=cpu.
- ``FolderSplit`` (``folder_split.py``) for ImageFolder trees (ImageNet): one DataLoader for the
  whole run, its workers kept alive across epochs, decodes only the samples in the order, so a
  dropped sample is never read.

Augmentation randomness comes from generators seeded by (seed, epoch[, sample]) in both, so an
epoch redone after a resume is identical, whatever the number of DataLoader workers.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from . import in_memory as dp_data
from .folder_split import FolderSplit
from . import datasets as dp_datasets
from ..train.config import TrainConfig
from ..seeding import derive_seed, generator

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class InMemorySplit:
    def __init__(self, images: dp_data.InMemoryImages, augment: bool, *, num_classes: int, padding: int = 4,
                 flip: bool = True):
        self.images, self.augment, self.padding, self.flip = images, augment, padding, flip
        self.num_classes = num_classes
        self.labels = images.labels.cpu()  # for the policies and reports; batches use the device copy
        self.in_channels = images.images.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    def take_unreadable(self) -> list[int]:
        return []  # decoded whole before training: nothing can turn out unreadable

    def prefetch(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int) -> None:
        pass  # nothing to load ahead: the data is in memory

    def batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
        """``(indices, images, targets)``: indices on the CPU (what ``DropAndPick.record`` takes),
        images and targets on the data's device."""
        device = self.images.images.device
        gen = generator(seed, epoch, "augment", device=device) if self.augment else None
        on_device = order.to(device, non_blocking=True)  # the whole shard in one copy per epoch
        for indices, rows in zip(order.split(batch_size), on_device.split(batch_size)):
            images, targets = self.images.batch(rows, gen, padding=self.padding, flip=self.flip)
            yield indices, images, targets


def _slice(labels: torch.Tensor, cfg: TrainConfig, split: str) -> Optional[torch.Tensor]:
    """Indices to keep from a split: --per-class first (train only), then --train/test-samples."""
    keep = None
    if split == "train" and cfg.per_class is not None:
        keep = dp_datasets.per_class_subsample(labels, cfg.per_class, derive_seed(cfg.seed, "per-class"))
    n = cfg.train_samples if split == "train" else cfg.test_samples
    if n is not None:
        pool = labels if keep is None else labels[keep]
        if n > len(pool):
            raise ValueError(f"{split}_samples={n} but the {split} split has only {len(pool)} samples")
        inner = dp_data.stratified_slice(pool, n, derive_seed(cfg.seed, f"{split}-slice"))
        keep = inner if keep is None else keep[inner]
    return keep


def _in_memory_splits(cfg: TrainConfig, load: Callable[[str], tuple[torch.Tensor, torch.Tensor]], num_classes: int,
                      device: torch.device):
    train_images = test_images = None
    for split in ("train", "test"):
        images, labels = load(split)
        keep = _slice(labels, cfg, split)
        if keep is not None:
            images, labels = images[keep], labels[keep]
        if split == "train":
            train_images = dp_data.InMemoryImages(images, labels)
        else:  # normalise the test split with the training statistics
            test_images = dp_data.InMemoryImages(images, labels, mean=train_images.mean, std=train_images.std)
    train_images, test_images = train_images.to(device), test_images.to(device)  # once, for the whole run
    return (InMemorySplit(train_images, True, num_classes=num_classes, padding=cfg.augment_padding, flip=cfg.augment_flip),
            InMemorySplit(test_images, False, num_classes=num_classes))


def build_splits(cfg: TrainConfig, pin_memory: bool = False, device: torch.device | str = "cpu") -> tuple:
    """(train, test) splits for ``cfg.dataset``; in-memory data lives on ``device``."""
    device = torch.device(device)
    if cfg.dataset == "fashion-mnist":
        root = dp_data.find_fashion_mnist(cfg.data_dir)
        return _in_memory_splits(cfg, lambda split: dp_data.load_fashion_mnist(root, split),
                                 dp_data.FASHION_MNIST_NUM_CLASSES, device)
    if cfg.dataset in ("cifar10", "cifar100"):
        root = dp_datasets.find_cifar(cfg.dataset, cfg.data_dir)
        return _in_memory_splits(cfg, lambda split: dp_datasets.load_cifar(root, cfg.dataset, split),
                                 dp_datasets.CIFAR_NUM_CLASSES[cfg.dataset], device)
    if cfg.dataset == "imagefolder":
        return _folder_splits(cfg, pin_memory, device)
    raise ValueError(f"unknown dataset {cfg.dataset!r}")


def _folder_splits(cfg: TrainConfig, pin_memory: bool, device: torch.device):
    # Imported here: torchvision (with torch._dynamo under it) adds about 3.5 s to the start of
    # every process, the CLI and each DDP rank, and in-memory datasets do not use it.
    from . import transforms as dp_transforms
    from .device_decode import DeviceDecoder

    if cfg.data_dir is None:
        raise ValueError("dataset imagefolder needs --data-dir pointing at a folder with train/ and val/")
    train_dir, val_dir = dp_datasets.find_imagefolder(cfg.data_dir)
    on_device = cfg.decode == "device"  # the workers only read bytes; the device decodes and augments
    pipelines = {  # (per image in the workers, geometry on the device)
        "train": (dp_transforms.imagenet_train_transform, dp_transforms.imagenet_train_geometry, (cfg.image_size,)),
        "test": (dp_transforms.imagenet_eval_transform, dp_transforms.imagenet_eval_geometry,
                 (cfg.eval_resize, cfg.image_size)),
    }
    splits = []
    for split, root in (("train", train_dir), ("test", val_dir)):
        per_image, geometry, sizes = pipelines[split]
        transform = None if on_device else per_image(*sizes)
        decoder = DeviceDecoder(geometry(*sizes), device) if on_device else None
        dataset = dp_datasets.FolderDataset(root, skip_unreadable=cfg.skip_unreadable and split == "train",
                                            encoded=on_device)
        num_classes = len(dataset.classes)  # class folders, even if a slice leaves one empty
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
        keep = _slice(labels, cfg, split)
        if keep is not None:
            dataset, labels = torch.utils.data.Subset(dataset, keep.tolist()), labels[keep]
        splits.append(FolderSplit(dataset, labels, transform, cfg.num_workers, pin_memory, num_classes,
                                  decoder=decoder))
    return tuple(splits)
