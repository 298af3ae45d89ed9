"""Everything droppick does with torch.distributed lives here.

When no process group is initialised every function is the single-process identity, so the
DaP core runs unchanged on one device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world() -> tuple[int, int]:
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def combine_losses(losses: torch.Tensor, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge every rank's per-sample losses into one global vector, identical on all ranks.

    Each rank only saw its shard. A sample is seen globally if any rank saw it; its loss is the
    maximum over the ranks that saw it. Taking the maximum (not a sum) means the padding
    duplicates of a sharded sampler, trained on two ranks, are not double counted, and every
    rank ends with bit-identical values, hence the identical subset.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return losses, seen
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    masked = torch.where(seen, losses, torch.full_like(losses, float("-inf"))).to(backend_device)
    seen_any = seen.to(torch.uint8).to(backend_device)
    dist.all_reduce(masked, op=dist.ReduceOp.MAX)
    dist.all_reduce(seen_any, op=dist.ReduceOp.MAX)
    seen_all = seen_any.cpu().bool()
    return torch.where(seen_all, masked.cpu(), losses), seen_all
