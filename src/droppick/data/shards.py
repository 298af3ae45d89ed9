"""What the two chunked formats share (``litdata:DIR``, ``wds:DIR``): the split that tells the DaP
engine how its samples are chunked, and counts what each epoch read.

The engine's sampler then orders each epoch chunk-aware (``sampler.chunk_aware_order``): a pure
function of (seed, epoch, subset, chunks), so a resumed epoch reads the same order, with each rank
taking a contiguous block of it. The subset is still the engine's: the order changes which batches
the samples meet, not which samples train (a loss-based policy sees other losses than in the
uniform order, as it would with another seed).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any, Optional

import torch

from ..sampler import Chunks
from .datasets import unreadable_image
from .folder_split import FolderSplit


def chunk_fetches(order: torch.Tensor, chunk_of: torch.Tensor, held: int) -> tuple[int, int]:
    """(chunks fetched, distinct chunks) along ``order`` by a reader that holds the ``held`` chunks it
    used last: its chunk reads, and the fewest any order of these samples needs. The chunk-aware
    order with ``window <= held`` fetches each chunk once; a uniform order over C chunks fetches
    one for most samples (all but about held / C of them)."""
    held_chunks: OrderedDict = OrderedDict()
    fetched = 0
    runs = torch.unique_consecutive(chunk_of[order]).tolist()
    for chunk in runs:
        if chunk in held_chunks:
            held_chunks.move_to_end(chunk)
            continue
        fetched += 1
        held_chunks[chunk] = None
        if len(held_chunks) > held:
            held_chunks.popitem(last=False)
    return fetched, len(set(runs))


def image_from_bytes(data: Optional[bytes], name: str, encoded: bool, skip_unreadable: bool) -> Any:
    """A stored image: its bytes as a uint8 tensor (``encoded``, for ``--decode device``), else
    decoded by Pillow to RGB; None for an unreadable one with ``skip_unreadable``."""
    from PIL import Image

    try:
        if data is None:
            raise ValueError("no image stored")
        if encoded:
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")  # forces the full decode, so truncation surfaces here
    except (OSError, ValueError, TypeError, Image.DecompressionBombError) as err:
        if skip_unreadable:
            return None
        raise unreadable_image(name, err) from err


class ChunkedSplit(FolderSplit):
    """A ``FolderSplit`` over a chunked source: ``chunks`` (``chunk_of[i]``, the chunk of the split's
    sample i, and the window), for ``DropAndPick(chunks=...)``, and the counts of what each epoch
    read (``take_counts``)."""

    def __init__(self, *args, chunk_of: torch.Tensor, window: int, source, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunks, self.source = Chunks(chunk_of, window), source
        self.chunks_read = self.chunks_min = 0

    def batches(self, order: torch.Tensor, batch_size: int, seed: int, epoch: int):
        fetched, distinct = chunk_fetches(order, *self.chunks)
        self.chunks_read += fetched
        self.chunks_min += distinct
        yield from super().batches(order, batch_size, seed, epoch)

    def take_counts(self) -> dict:
        """``take_counts`` of a ``FolderSplit`` plus ``chunks_read`` (the fetches of a reader holding
        ``window`` chunks along the orders read, ``chunk_fetches``) and ``chunks_min`` (their distinct
        chunks), and what the source counts itself: a sequential one its real ``chunks_read`` (the
        shards it read), ``samples_skipped`` and ``bytes_read``."""
        counts = super().take_counts() | {"chunks_read": self.chunks_read, "chunks_min": self.chunks_min}
        self.chunks_read = self.chunks_min = 0
        return counts | self.source.take_counts()


class SequentialStream:
    """A sequential source (``webdataset.TarShards``) as ``FolderSplit``'s ``stream``, for a split that
    keeps ``keep`` of the source's samples (None: all): the split's positions become source indices."""

    def __init__(self, source, keep: Optional[torch.Tensor]):
        self.source, self.keep = source, keep

    def read(self, order: torch.Tensor):
        return self.source.read(order if self.keep is None else self.keep[order])

    def decode(self, payload) -> tuple[Any, int]:
        return self.source.decode(payload)
