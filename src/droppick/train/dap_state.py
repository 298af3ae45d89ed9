"""What the trainer reads from its DaP engine after each epoch, and how it checkpoints it: the
whole state (every rank holds it), or with ``shard_state`` (``droppick train --shard-state``) the
state of each rank's own slice of the samples (``sharded_engine.ShardedDropAndPick``).

With sharded state no rank holds the subset or the N losses, so, per item the trainer needs:

- the trained subset's size, class counts and SHA-256 (metrics.jsonl): from the ranks' slices
  (``subset_metrics``): the size and the counts summed over the ranks, the digest hashed from the
  all-gathered bitmaps (N/8 bytes) a chunk at a time. All three equal an unsharded run's.
- the retention record (``droppick inspect``): not kept. It would hold 16 bytes for each of the N
  samples on the rank that checkpoints, what sharding is for not to need; ``inspect`` says so.
- the check that the ranks agree on the subset: not made. No rank holds a copy of another's slice
  to compare; each slice's decision is made once, by its owner, from counts every rank sums alike.
- checkpoints: every rank writes its shard (``dap-shard-EEEE-R-of-W.pt``, atomic, with its digest)
  before rank 0 writes ``checkpoint-EEEE.pt``, which names them in place of the DaP state
  (``save_dap_shards``). A resume in the same world size loads each rank's own shard (exact); in
  another one each rank reads the shards that overlap its new slice (``with_dap_state``).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch

from .. import distributed
from ..sharded import CHUNK, pack, slice_bounds, unpack
from ..sharded_engine import ShardedDropAndPick
from .checkpoint import load_checkpoint, write_with_digest
from .rundir import RunDir, RunWriteError


def subset_metrics(dap, labels: torch.Tensor, num_classes: int, wrong: Optional[torch.Tensor] = None) -> dict:
    """The current subset's ``subset_size``, ``subset_class_counts`` and ``subset_sha256`` (called
    before ``end_epoch``: the subset the epoch trained), and with ``wrong`` (a bool per sample, on
    the labels' device: its label was flipped) ``subset_wrong_labels``, how many of its members. Collective with sharded state."""
    if not isinstance(dap, ShardedDropAndPick):
        subset = dap.subset
        out = {"subset_size": int(subset.numel()),
               "subset_class_counts": torch.bincount(labels[subset], minlength=num_classes).tolist(),
               "subset_sha256": distributed.subset_sha256(subset)}
        return out if wrong is None else out | {"subset_wrong_labels": int(wrong[subset].sum())}
    members = dap.members()
    held = members.to(labels.device)
    counts = torch.bincount(labels[dap.lo:dap.hi][held], minlength=num_classes).cpu().numpy()
    bitmaps = distributed.all_gather_uneven(pack(members.numpy()))
    out = {"subset_size": dap.subset_size, "subset_class_counts": distributed.all_reduce_counts([counts]).tolist(),
           "subset_sha256": bitmaps_sha256(bitmaps, slice_bounds(dap.num_samples, len(bitmaps)))}
    if wrong is not None:
        mine = np.array([int(wrong[dap.lo:dap.hi][held].sum())])
        out["subset_wrong_labels"] = int(distributed.all_reduce_counts([mine])[0])
    return out


def bitmaps_sha256(bitmaps: Sequence[torch.Tensor], bounds: Sequence[int]) -> str:
    """``distributed.subset_sha256`` of the subset whose members every rank's bitmap of its slice
    marks, without building its indices: they are hashed a chunk of samples at a time."""
    digest = hashlib.sha256()
    for r, bits in enumerate(bitmaps):
        length = bounds[r + 1] - bounds[r]
        for start in range(0, length, CHUNK):  # CHUNK is a multiple of 8: a chunk starts on a byte
            mask = unpack(bits[start // 8:], min(CHUNK, length - start))
            digest.update((np.flatnonzero(mask) + (bounds[r] + start)).astype(np.int64).tobytes())
    return digest.hexdigest()


def end_epoch(dap, retention, profiler) -> Optional[str]:
    """``dap.end_epoch()``; with the whole state also the check that every rank holds the same
    subset and the retention record's update (``retention`` is None with sharded state)."""
    if retention is None:
        event = dap.end_epoch()
        profiler.lap("dap end_epoch")
        return event
    epoch, trained = dap.epoch, dap.subset
    # Retention ranks samples by their losses; end_epoch empties the engine's, so merge a copy first.
    losses, _ = distributed.combine_losses(dap.losses.clone(), dap.seen)
    event = dap.end_epoch()
    distributed.check_agreement(dap.subset, epoch)
    profiler.lap("dap end_epoch")
    retention.update(trained, dap.subset, epoch, losses)
    return event


def save_dap_shards(run: RunDir, dap: ShardedDropAndPick, epoch: int) -> dict:
    """Every rank writes its shard of the DaP state after ``epoch`` (collective: when it returns, all
    are in place, or every rank raises); returns what checkpoint-EEEE.pt holds in place of the DaP
    state: the shard files' names, in rank order, the world size and the number of samples."""
    path = run.dap_shard_path(epoch, dap.rank, dap.world)
    error = None
    try:
        with run.writing(f"the DaP shard {path.name}"):
            buffer = io.BytesIO()
            torch.save(dap.state_dict(), buffer)
            write_with_digest(path, buffer.getvalue())
    except RunWriteError as e:
        error = e
    if distributed.any_rank(error is not None):
        raise error or RunWriteError(0, f"another rank could not write its DaP shard of epoch {epoch} in {run.path} "
                                     "(its error says why); everything saved before is intact")
    return {"shard_files": [run.dap_shard_path(epoch, r, dap.world).name for r in range(dap.world)],
            "world": dap.world, "num_samples": dap.num_samples}


def with_dap_state(run: RunDir, checkpoint: dict, rank: int, world: int) -> dict:
    """``checkpoint`` with, in place of the shard files its DaP state names (with shard_state), what
    rank ``rank`` of ``world`` loads: its own shard in the same world size, else the shards in rank
    order (a sequence holding those that overlap its new slice, which ``load_state_dict`` reads).
    Collective: a shard missing or damaged on any rank stops every rank, naming it."""
    reference = checkpoint["dap"]
    if "shard_files" not in reference:
        return checkpoint
    files, old = reference["shard_files"], reference["world"]
    wanted = [rank] if old == world else _overlapping(reference["num_samples"], old, world, rank)
    loaded, error = {}, None
    try:
        for r in wanted:
            loaded[r] = load_checkpoint(run.path / files[r])
    except (ValueError, OSError) as e:
        error = e
    if distributed.any_rank(error is not None):
        raise ValueError(f"cannot resume from the DaP shards of {run.path}: "
                         + (str(error) if error else "another rank could not read its shards (its error says why)"))
    return {**checkpoint, "dap": loaded[rank] if old == world else _Shards(loaded, old)}


def _overlapping(n: int, old: int, world: int, rank: int) -> list[int]:
    """The old ranks whose slices overlap rank ``rank`` of ``world``'s, and rank 0 (whose shard says the old world)."""
    bounds, (lo, hi) = slice_bounds(n, old), slice_bounds(n, world)[rank:rank + 2]
    return sorted({0} | {r for r in range(old) if bounds[r] < hi and bounds[r + 1] > lo})


class _Shards(Sequence):
    """Every old rank's shard in rank order, of which only those read in advance are held."""

    def __init__(self, loaded: dict, world: int):
        self.loaded, self.world = loaded, world

    def __len__(self) -> int:
        return self.world

    def __getitem__(self, r: int) -> dict:
        return self.loaded[r]
