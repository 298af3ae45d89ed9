"""An ImageFolder split for the trainer: one DataLoader for the whole run.

The DataLoader is built at the first epoch and kept: with ``num_workers > 0`` its workers stay
alive across epochs (``persistent_workers``), so an epoch starts without spawning processes or
re-importing torchvision in them. What changes per epoch travels with the indices: the batch
sampler yields ``(index, epoch)`` pairs from the order it was given for that epoch (the engine's
current shard), so the workers decode only the current subset (a dropped sample is never read)
and seed each sample's augmentation by (seed, epoch, index), whatever the worker count. Once DaP
has decided the next subset, ``prefetch`` starts that epoch's loading, so its first batches are
decoded while the trainer evaluates and checkpoints. With a ``DeviceDecoder`` (``--decode device``)
the workers only read the files' bytes and the decoder turns each batch into images on the
training device.

A sequential format (``wds:``, tar shards) cannot be read by index in the workers: its ``stream``
reads the samples' bytes in the order, in the main process as the DataLoader asks for batches, and
hands each sample's bytes to the workers with its index, which only decode them.
"""

from __future__ import annotations

import functools
import gc
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..seeding import generator, reseeding_global_rng
from .datasets import unreadable_image

if TYPE_CHECKING:  # its module imports torchvision, which folder_split itself does not need
    from .device_decode import DeviceDecoder

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
PREFETCH_FACTOR = 4  # batches each worker prepares ahead: enough to hide the start of an epoch


class FolderSplit:
    def __init__(self, dataset: Dataset, labels: torch.Tensor, transform: Optional[Callable], num_workers: int,
                 pin_memory: bool, num_classes: int, in_channels: int = 3, decoder: Optional[DeviceDecoder] = None,
                 stream=None):
        """``transform`` runs in the workers on decoded images; with a ``decoder`` the dataset yields
        encoded bytes (``FolderDataset(encoded=True)``) and ``transform`` must be None. ``stream``
        (a sequential format's reader): ``stream.read(order)`` yields each sample's payload in the
        order, ``stream.decode(payload)`` turns one into ``(image, label)`` in a worker."""
        if (decoder is None) == (transform is None):
            raise ValueError("FolderSplit takes a transform (decoding in the workers) or a decoder (on the device), "
                             "exactly one of them")
        self.dataset, self.labels, self.transform, self.num_classes = dataset, labels, transform, num_classes
        self.num_workers, self.pin_memory, self.in_channels = num_workers, pin_memory, in_channels
        self.decoder = decoder
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        self.skip_unreadable = getattr(base, "skip_unreadable", False)
        self.unreadable: list[int] = []
        self.stream = stream
        self.decoded = 0  # samples decoded (or tried) since the last take_counts
        self._batches = _EpochBatches(None if stream is None else stream.read)
        self._loader: Optional[DataLoader] = None
        self._seed: Optional[int] = None
        self._pending: Optional[tuple] = None  # (order, batch_size, epoch, iterator) from prefetch

    def __len__(self) -> int:
        return len(self.dataset)

    def prefetch(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int) -> None:
        """Start loading ``epoch``'s first batches now, so the workers decode them while the trainer
        evaluates and checkpoints; ``batches`` with the same arguments then picks them up."""
        if self.num_workers > 0:
            self._batches.set(order, batch_size, epoch)
            self._pending = (order, batch_size, epoch, iter(self._loader_for(seed)))

    def batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int) -> Iterator[Batch]:
        """Batches of the readable samples of ``order``; with ``skip_unreadable`` the others are
        left out of their batch and collected for ``take_unreadable``."""
        loader = self._loader_for(seed)
        pending, self._pending = self._pending, None
        if pending is not None and pending[1:3] == (batch_size, epoch) and torch.equal(pending[0], order):
            iterator = pending[3]
        else:
            self._batches.set(order, batch_size, epoch)
            iterator = iter(loader)
        for indices, images, targets, unreadable in iterator:
            self.unreadable.extend(unreadable)
            self.decoded += len(indices) + len(unreadable)
            indices, targets = torch.tensor(indices, dtype=torch.int64), torch.tensor(targets, dtype=torch.int64)
            if self.decoder is not None and indices.numel():
                indices, images, targets = self._decode(indices, images, targets, seed, epoch)
            if indices.numel():
                yield indices, images, targets

    def _decode(self, indices: torch.Tensor, encoded: list, targets: torch.Tensor, seed: int, epoch: int) -> Batch:
        images, undecodable = self.decoder(indices.tolist(), encoded, seed, epoch)
        if undecodable:
            if not self.skip_unreadable:
                raise unreadable_image(self.path_of(indices[undecodable[0]]), "not a decodable image")
            self.unreadable.extend(indices[undecodable].tolist())
            decoded = torch.ones(len(indices), dtype=torch.bool)
            decoded[undecodable] = False
            indices, targets = indices[decoded], targets[decoded]
        return indices, images, targets

    def _loader_for(self, seed: int) -> DataLoader:
        if self._loader is None:
            self._seed = seed
            self._loader = DataLoader(
                _SeededSamples(self.dataset, self.transform, seed, None if self.stream is None else self.stream.decode),
                batch_sampler=self._batches,
                num_workers=self.num_workers, pin_memory=self.pin_memory,
                collate_fn=functools.partial(_collate_readable, stack=self.decoder is None),
                persistent_workers=self.num_workers > 0,
                # The DataLoader draws its workers' base seed from this, not from the caller's global RNG.
                generator=generator(seed, "folder-loader"), worker_init_fn=_freeze_inherited_objects,
                prefetch_factor=PREFETCH_FACTOR if self.num_workers > 0 else None)
        if seed != self._seed:
            raise ValueError(f"this split's loader seeds augmentation with {self._seed}, not {seed}")
        return self._loader

    def take_counts(self) -> dict:
        """What was read since the last call: ``samples_decoded`` (every sample of the orders given to
        ``batches``: one read by index decodes only what it is asked for, so nothing is skipped)."""
        decoded, self.decoded = self.decoded, 0
        return {"samples_decoded": decoded, "samples_skipped": 0}

    def take_unreadable(self) -> list[int]:
        """The sample indices found unreadable since the last call."""
        found, self.unreadable = self.unreadable, []
        return found

    def path_of(self, index: int) -> str:
        dataset, index = self.dataset, int(index)
        if isinstance(dataset, Subset):
            dataset, index = dataset.dataset, dataset.indices[index]
        return dataset.path_of(index)


class _EpochBatches(Sampler[list]):
    """The batch sampler of the run's one DataLoader: lists of ``(index, epoch)`` for the order
    ``set`` last (it is iterated in the main process, so a new order reaches the live workers), or
    with ``read`` (a sequential format's) ``(index, epoch, payload)``, the payloads read in order."""

    def __init__(self, read: Optional[Callable] = None):
        self.order, self.batch_size, self.epoch = torch.zeros(0, dtype=torch.int64), 1, 0
        self.read = read

    def set(self, order: torch.Tensor, batch_size: int, epoch: int) -> None:
        self.order, self.batch_size, self.epoch = order, batch_size, epoch

    def __len__(self) -> int:
        return -(-self.order.numel() // self.batch_size)

    def __iter__(self):
        payloads = None if self.read is None else self.read(self.order)
        for chunk in self.order.split(self.batch_size):
            if payloads is None:
                yield [(i, self.epoch) for i in chunk.tolist()]
            else:
                yield [(i, self.epoch, next(payloads)) for i in chunk.tolist()]


def _freeze_inherited_objects(worker_id: int) -> None:
    """A worker starts with every object of the process it was forked from (torch, torchvision,
    the dataset's file list). The worker's first full garbage collection walked all of them,
    writing to each page and so copying it (copy-on-write): the worker stalled 0.3-0.5 s (an
    epoch's first batch took 430-620 ms instead of 130 in bench/imagefolder_loader.py), and its
    memory grew. Frozen objects are left out of collections; the new ones are still collected."""
    gc.freeze()


def _collate_readable(items: list, stack: bool = True) -> tuple:
    """``(indices, images, targets, unreadable)``: the readable items' images stacked (or, for
    encoded bytes of different lengths, a list), and the indices of the unreadable ones
    (``FolderDataset(skip_unreadable=True)`` gives them a None image).

    Indices and targets stay lists (``batches`` makes them tensors): each tensor a worker returns
    is handed over through shared memory, and the main process fetches every handle from the
    worker over a socket, which waits for the worker's GIL. Two tensors fewer per batch made the
    loader 5-10 % faster on 2 cores (bench/imagefolder_loader.py)."""
    readable = [item for item in items if item[1] is not None]
    unreadable = [item[0] for item in items if item[1] is None]
    if not readable:
        return [], None, [], unreadable
    indices, images, targets = zip(*readable)
    images = torch.utils.data.default_collate(images) if stack else list(images)
    return list(indices), images, list(targets), unreadable


class _SeededSamples(Dataset):
    """Item ``(index, epoch)``: the sample's transform under an RNG seeded by (seed, epoch, index).

    torchvision's random transforms draw from the global RNG; forking it per sample keeps the
    caller's RNG untouched and makes each sample's augmentation independent of worker count
    and order.
    """

    def __init__(self, dataset: Dataset, transform: Callable, seed: int, decode: Optional[Callable] = None):
        self.dataset, self.transform, self.seed, self.decode = dataset, transform, seed, decode

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        return self.__getitems__([item])[0]

    def __getitems__(self, items: list[tuple]) -> list[tuple]:
        """The DataLoader asks for a whole batch at once: the global RNG is saved and restored once
        per batch, not per image. An item ``(index, epoch, payload)`` brings its sample's bytes
        (a sequential format), decoded here instead of read by index."""
        samples = []
        with reseeding_global_rng(self.seed) as reseed:
            for index, epoch, *payload in items:
                image, label = self.decode(*payload) if payload else self.dataset[index]
                if image is not None and self.transform is not None:  # else skipped, or bytes for the device
                    reseed(epoch, "augment", index)
                    image = self.transform(image)
                samples.append((index, image, label))
        return samples
