"""Everything droppick does with torch.distributed lives here.

When no process group is initialised every function is the single-process identity, so the
DaP core runs unchanged on one device.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from typing import NoReturn, Sequence

import numpy as np
import torch
import torch.distributed as dist

if dist.is_available() and not dist.is_initialized():
    # torch.distributed.nn binds ``group=group.WORLD`` as a default argument of ten functions when
    # it is imported. Imported while a group exists (the first DistributedDataParallel of a process
    # imports it, through torch._dynamo), it pins that group for good: destroy_process_group no
    # longer destroys it, its gloo threads run on into interpreter shutdown, and one that takes the
    # GIL there is ended by CPython mid-destructor: SIGABRT, "terminate called without an active
    # exception". Imported now, before any group, the defaults bind None. bench/repro_gloo_exit_abort.py
    # reproduces the abort and shows this order preventing it.
    import torch.distributed.nn  # noqa: F401


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def combine_losses(losses: torch.Tensor, status: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge every rank's per-sample losses into one global vector, identical on all ranks.

    status: uint8 per sample, 0 = not recorded on this rank (its loss is +inf), 1 = recorded,
    2 = recorded with a non-finite loss, 3 = skipped (its image could not be read). Each rank only
    saw its shard. A sample's merged status
    and loss are the maxima over the ranks that recorded it. The maximum (not a sum) means the
    padding duplicates of a sharded sampler, trained on two ranks, are not double counted, a
    non-finite loss on any rank wins, and every rank ends with bit-identical values, hence the
    identical subset.

    Traffic: two all-reduces per epoch over N values each, N float32 losses and N uint8
    statuses, i.e. 5 bytes per sample per rank whatever the world size (6.4 MB for ImageNet's
    1.28M samples; a ring all-reduce sends and receives about twice that per rank). Sample
    indices never travel, so they stay exact int64 at any N.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return losses, status
    backend_device = _collective_device()
    masked = torch.where(status > 0, losses, float("-inf")).to(backend_device)  # unrecorded must not win
    merged = status.to(backend_device, copy=True)  # a copy on the CPU too: the caller's statuses stay its own
    dist.all_reduce(masked, op=dist.ReduceOp.MAX)
    dist.all_reduce(merged, op=dist.ReduceOp.MAX)
    merged = merged.cpu()
    return torch.where(merged > 0, masked.cpu(), float("inf")), merged


def setup_from_env(device_name: str) -> torch.device:
    """Join the process group torchrun describes (WORLD_SIZE > 1) and pick this rank's device.

    gloo on CPU, nccl on GPU; one process per GPU, chosen by LOCAL_RANK. Without torchrun this
    only resolves the device.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        requested = torch.device("cuda" if device_name == "auto" else device_name)
        device = torch.device("cuda", local_rank if world > 1 else (requested.index or 0))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
        if attempt is None or os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
            dist.init_process_group(backend=backend)
        else:
            # torchrun's restarted workers meet on the agent's store, which still holds the failed
            # attempt's keys (every rank's gloo address): a restarted rank could dial a dead one and
            # fail the restart. Each attempt gets keys of its own. Only with one agent: several
            # agents count their restarts apart (a membership change restarts workers uncounted),
            # so their attempt numbers, hence prefixes, could differ and the ranks never meet.
            store, rank, size = next(dist.rendezvous("env://"))
            dist.init_process_group(backend=backend, store=dist.PrefixStore(f"droppick/attempt-{attempt}", store),
                                    rank=rank, world_size=size)
    return device


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few floats over all ranks (identity on one process)."""
    if not is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_named(values: dict) -> dict:
    """``all_reduce_sum`` of a dict's values, each under its name."""
    return dict(zip(values, all_reduce_sum(list(values.values()))))


def uneven_batches(module: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """Around an epoch's steps: let the ranks train different numbers of batches.

    With ``--skip-unreadable`` a rank whose batch holds no readable image skips that step, and
    DDP's gradient all-reduces would then wait forever for it. ``Join`` lets a rank that has
    run out of batches shadow the others' all-reduces (contributing zero gradients, averaged
    over the full world size) until all are done. Only when asked: Join adds an all-reduce per step.
    """
    from torch.nn.parallel import DistributedDataParallel

    if not enabled or not isinstance(module, DistributedDataParallel):
        return contextlib.nullcontext()
    from torch.distributed.algorithms.join import Join

    return Join([module])


class RankDisagreementError(RuntimeError):
    """The ranks hold different DaP subsets: a bug or a corrupted state, never a user error."""


def subset_sha256(subset: torch.Tensor) -> str:
    """The subset's digest: what the ranks compare, and what metrics.jsonl records per epoch."""
    return hashlib.sha256(subset.to(torch.int64).numpy().tobytes()).hexdigest()


def check_agreement(subset: torch.Tensor, epoch: int) -> None:
    """Stop unless every rank holds the same subset after ``epoch`` (compared by digest; one
    process cannot disagree with itself, so alone it computes nothing).

    ``end_epoch`` merges the losses so that all ranks select alike; this checks it at run time
    (one all-gather of a 64-character string per epoch), so a divergence (a policy that draws
    from an unseeded RNG, a rank resumed from another checkpoint) stops the run before any
    checkpoint is written instead of training on inconsistent shards.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return
    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, subset_sha256(subset))
    groups: dict[str, list[int]] = {}
    for rank, d in enumerate(digests):
        groups.setdefault(d, []).append(rank)
    if len(groups) > 1:
        held = "; ".join(f"ranks {ranks} hold subset {d[:12]}" for d, ranks in groups.items())
        raise RankDisagreementError(f"after epoch {epoch} the ranks disagree on the DaP subset ({held}); stopped "
                                    "before writing its checkpoint. Every rank must run the same droppick version, "
                                    "config and policy; resume from the last checkpoint")


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers before each forward, but every rank then updates its running
    statistics with its own last batch, so after an epoch they differ slightly. Evaluating
    (and checkpointing) the same model on every rank needs rank 0's copy.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def exit_done() -> NoReturn:
    """End a torchrun worker whose work is done and saved: destroy its process group (if it is
    still in one), then leave without the interpreter's teardown.

    Workers aborted in that teardown now and then, after their work was done (SIGABRT,
    ``terminate called without an active exception``), and torchrun then reported the finished
    run as failed. The cause is torch's (bench/repro_gloo_exit_abort.py reproduces it, with the
    backtrace): a process group that something still references outlives destroy_process_group,
    and when one of its gloo threads releases a tensor while the interpreter is shutting down,
    CPython 3.11 ends that thread inside a C++ destructor, which aborts the process. Importing
    torch.distributed.nn before any group (this module does) removes the reference torch itself
    keeps; leaving at once also covers any reference a library (accelerate, Lightning) may keep.
    Nothing is left to do at that point but flush the output.
    """
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _collective_device() -> torch.device:
    # nccl only moves CUDA tensors; gloo moves CPU ones.
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# -- the sharded engine's collectives (sharded_engine.py): counts, and each rank's own records ---------------

def all_reduce_counts(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``sharded.Reduce`` under torch.distributed: the sum over all ranks of this rank's int64 array
    (a process holds one rank, so ``arrays`` has one; alone, the array itself)."""
    (array,) = arrays
    if not is_initialized() or dist.get_world_size() == 1:
        return np.array(array, dtype=np.int64)
    t = torch.from_numpy(np.array(array, dtype=np.int64)).to(_collective_device())
    dist.all_reduce(t)
    return t.cpu().numpy()


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (collective: every rank gets the same answer, so all stop
    together when one found a problem; alone, ``flag``)."""
    return bool(all_reduce_counts([np.array([bool(flag)], dtype=np.int64)])[0])


def all_to_all(tensors: list[torch.Tensor], counts: list[int]) -> tuple[list[torch.Tensor], list[int]]:
    """Send rank r the ``counts[r]`` entries of each 1-D tensor that follow those of ranks below r;
    returns what every rank sent this one, in rank order, and how many entries came from each."""
    if not is_initialized() or dist.get_world_size() == 1:
        return tensors, counts
    device = _collective_device()
    received = torch.empty(len(counts), dtype=torch.int64, device=device)
    dist.all_to_all_single(received, torch.tensor(counts, dtype=torch.int64, device=device))
    sizes = received.tolist()
    out = []
    for t in tensors:
        o = torch.empty(sum(sizes), dtype=t.dtype, device=device)
        dist.all_to_all_single(o, t.to(device), sizes, counts)
        out.append(o.cpu())
    return out, sizes


def all_gather_uneven(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's 1-D ``tensor``, in rank order; their lengths may differ."""
    if not is_initialized() or dist.get_world_size() == 1:
        return [tensor]
    device, world = _collective_device(), dist.get_world_size()
    length = torch.tensor([tensor.numel()], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    longest = max(int(n) for n in lengths)
    padded = torch.zeros(longest, dtype=tensor.dtype, device=device)
    padded[:tensor.numel()] = tensor.to(device)
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded)
    return [o[:int(n)].cpu() for o, n in zip(out, lengths)]


def combine_owned_losses(samples: np.ndarray, losses: torch.Tensor, status: torch.Tensor, bounds: list[int],
                         rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``combine_losses`` for sharded state: the merged losses and statuses of this rank's slice
    ``bounds[rank] .. bounds[rank + 1] - 1`` only, as float32 and uint8 arrays over it.

    samples: the sorted samples this rank recorded (its shard's), with their losses and statuses.
    Each record goes to the rank that owns its sample, in one all-to-all of a 4-byte offset into
    the owner's slice, the 4-byte loss and the 1-byte status: 9 bytes per record, about n/W records
    sent per rank (where ``combine_losses`` all-reduces 5 bytes for each of the N samples). The owner
    keeps the highest loss and status of the ranks that recorded a sample, +inf where none did.
    """
    edges = np.array(bounds)
    counts = np.diff(np.searchsorted(samples, edges)).tolist()  # sorted samples: one run per owner
    offsets = torch.from_numpy((samples - np.repeat(edges[:-1], counts)).astype(np.int32))
    (offsets, losses, status), sizes = all_to_all([offsets, losses, status], counts)
    length = bounds[rank + 1] - bounds[rank]
    merged, merged_status = np.full(length, -np.inf, dtype=np.float32), np.zeros(length, dtype=np.uint8)
    for start, size in zip(np.cumsum([0] + sizes[:-1]), sizes):  # a rank records each sample once: no repeats
        at = offsets[start:start + size].numpy()
        merged[at] = np.maximum(merged[at], losses[start:start + size].numpy())
        merged_status[at] = np.maximum(merged_status[at], status[start:start + size].numpy())
    return np.where(merged_status > 0, merged, np.float32(np.inf)), merged_status
