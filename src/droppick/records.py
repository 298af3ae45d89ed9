"""What both engines do with their arguments and a batch's losses: check the arguments and build the
policy (``engine_policy``), check a batch (``checked_batch``) and, at ``flush``, write the batches
recorded since into per-sample arrays (``write_records``).

``DropAndPick`` writes into arrays over all N samples; the sharded engine (``sharded_engine``) into
arrays over the samples of its rank's shard. The same function makes the same rules hold in both.
"""

from __future__ import annotations

import torch

from .policies import Policy, build_policy
from .schedule import DaPSchedule, require_int


def engine_policy(num_samples: int, schedule: DaPSchedule, policy, **settings) -> Policy:
    """The policy an engine runs (``policies.build_policy`` with ``settings``), after the checks of the
    engine's first two arguments."""
    require_int("num_samples", num_samples, 1)
    if not isinstance(schedule, DaPSchedule):
        raise ValueError(f"schedule must be a DaPSchedule, got {type(schedule).__name__}")
    return build_policy(policy, **settings)


def checked_batch(indices, losses: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``indices`` as an int64 CPU tensor, or a ``ValueError`` saying what ``record()`` needs instead."""
    indices = torch.as_tensor(indices)
    if losses.dim() != 1 or losses.numel() != indices.numel():
        raise ValueError(
            f"record() needs one loss per sample: got losses of shape {tuple(losses.shape)} for "
            f"{indices.numel()} indices. Compute the loss with reduction='none', e.g. "
            "F.cross_entropy(logits, targets, reduction='none'), and take .mean() for backward."
        )
    if indices.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"indices must be an integer tensor (int64), got {indices.dtype}")
    indices = indices.to("cpu", torch.int64)
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_samples):
        raise ValueError(f"sample indices must lie in 0..{num_samples - 1}; got {indices.min()}..{indices.max()}")
    return indices


def write_records(losses: torch.Tensor, seen: torch.Tensor, pending: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Write ``pending`` (positions into ``losses``, and their losses), in record order, into
    ``losses`` (float32) and ``seen`` (uint8: 1 a loss, 2 a non-finite one).

    A position's last loss wins; a non-finite loss anywhere in ``pending`` wins over any finite
    one, as -inf (ranked below every finite loss) with status 2. One host copy for all of them.
    """
    if not pending:
        return
    values = torch.cat([v for _, v in pending]).cpu()
    for (positions, _), v in zip(pending, values.split([p.numel() for p, _ in pending])):
        losses[positions] = v
        seen[positions] = 1
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = torch.cat([p for p, _ in pending])[~finite].long()
        seen[bad], losses[bad] = 2, float("-inf")
