"""``--decode device``: the loader's workers only read files; the training device decodes them.

With ``--decode workers`` (the default) every DataLoader worker decodes with Pillow and augments
on the CPU, which at ImageNet scale takes many cores per GPU. With ``--decode device`` the workers
hand over each file's bytes, ``torchvision.io.decode_jpeg`` decodes the batch's JPEGs on the
training device in one call (nvJPEG on a GPU; libjpeg-turbo on the CPU, the path the tests run),
and the same torchvision v2 geometry (crop, flip; resize and centre crop for evaluation) runs
on the decoded uint8 tensors there before one batched normalisation.

Each sample's geometry runs under the global CPU RNG seeded by (seed, epoch, "augment", index),
as in the workers' path (``folder_split._SeededSamples``). v2 draws crop boxes and flips from that
generator whatever device the image is on, so both paths draw the same boxes and flips for a
sample, and a resumed epoch redraws them. Pixels differ slightly: Pillow's resize filter is not
torchvision's tensor one.

Files that are not JPEGs (PNG, or bytes that are no image) are decoded on the CPU by
``torchvision.io.decode_image`` and moved to the device; one that does not decode either is
reported back by its position in the batch.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..seeding import reseeding_global_rng
from .transforms import IMAGENET_MEAN, IMAGENET_STD, normalise_batch

_JPEG_MAGIC = [0xFF, 0xD8, 0xFF]  # SOI marker and the first segment's marker byte
_DECODE_ERRORS = (RuntimeError, ValueError)  # what torchvision.io raises on bytes it cannot decode


class DeviceDecoder:
    """Turns a batch of encoded files into a normalised float32 batch on ``device``."""

    def __init__(self, geometry: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.geometry, self.device = geometry, torch.device(device)
        self.normalise = normalise_batch(mean, std)

    def __call__(self, indices: list[int], encoded: list[torch.Tensor], seed: int,
                 epoch: int) -> tuple[Optional[torch.Tensor], list[int]]:
        """``(images, undecodable)``: the decodable samples' images stacked in batch order (None if
        there are none), and the batch positions of the samples that did not decode."""
        images, undecodable = [], []
        with reseeding_global_rng(seed) as reseed:
            for position, (index, image) in enumerate(zip(indices, self._decode(encoded))):
                if image is None:
                    undecodable.append(position)
                    continue
                reseed(epoch, "augment", index)
                images.append(self.geometry(image))
        return (self.normalise(torch.stack(images)) if images else None), undecodable

    def _decode(self, encoded: list[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        is_jpeg = [data[:3].tolist() == _JPEG_MAGIC for data in encoded]
        jpegs = iter(self._decode_jpegs([data for data, jpeg in zip(encoded, is_jpeg) if jpeg]))
        return [next(jpegs) if jpeg else self._decode_other(data) for data, jpeg in zip(encoded, is_jpeg)]

    def _decode_jpegs(self, jpegs: list[torch.Tensor]) -> list[Optional[torch.Tensor]]:
        from torchvision.io import ImageReadMode, decode_jpeg

        if not jpegs:
            return []
        try:
            return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=self.device)
        except _DECODE_ERRORS:  # one bad file fails the whole call: decode one by one to find it
            return [self._decode_other(data) for data in jpegs]

    def _decode_other(self, data: torch.Tensor) -> Optional[torch.Tensor]:
        from torchvision.io import ImageReadMode, decode_image

        try:
            return decode_image(data, mode=ImageReadMode.RGB).to(self.device, non_blocking=True)
        except _DECODE_ERRORS:
            return None
