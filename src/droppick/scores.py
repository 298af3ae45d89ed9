"""What ``DropAndPick(score=...)`` ranks the samples by: each batch's per-sample score, from what the
training step already has (its losses, or its logits and targets): no extra forward pass.

Every score is "higher = harder", so every rule (keep the hardest, the floor, ema, window, trusted,
epsilon, InfoBatch, SeTa, a rule of your own) works on any of them unchanged:

- ``"loss"`` (the default, the paper's): the per-sample loss as recorded.
- ``"el2n"``: ``||softmax(logits) - onehot(target)||_2``, in [0, sqrt(2)] (the EL2N score of Paul et
  al. 2021, "Deep Learning on a Data Diet", computed on the model being trained).
- ``"margin"``: the hardness ``1 - (p_true - max_{c != true} p_c)``, in [0, 2]: one minus the true
  class's probability margin over the largest other one. A small margin (or a negative one, a
  misclassified sample) is hard; ``1 - margin`` keeps every value non-negative, as losses are.

The engine stores the chosen score where it stored the loss (``dap.losses``, the ``losses`` a
selection rule's ``select`` and ``observe`` receive, ``EpochEnd.losses``; ``EpochEnd.score`` and
``dap.score`` name it), so a rule of your own reads whichever score the engine records.
``register_score(name, fn)`` adds one by name.

``el2n`` and ``margin`` need the logits, shape (batch, classes), and the targets as class indices;
they are computed without gradients, in float32, on the logits' device (copied to the host at
``flush``, as the losses are). A sample whose loss or any of whose logits is NaN or infinite gets a
NaN score, which the engine treats as a non-finite loss (``NonFiniteLossError``, or left out with
``exclude_nonfinite``).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits float32 [B, C], targets int64 [B]) -> [B]


def el2n(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``||softmax(logits) - onehot(targets)||_2`` per row."""
    probs = logits.softmax(dim=1)
    return (probs - F.one_hot(targets, probs.shape[1]).to(probs.dtype)).norm(dim=1)


def margin(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The hardness ``1 - (p_true - max_{c != true} p_c)`` per row: 0 for a sure right answer, 2 for
    a sure wrong one; a smaller margin ranks harder."""
    if logits.shape[1] < 2:
        raise ValueError(f"score 'margin' needs at least 2 classes (a largest other one); the logits have {logits.shape[1]}")
    probs = logits.softmax(dim=1)
    true = probs.gather(1, targets[:, None]).squeeze(1)
    other = probs.scatter(1, targets[:, None], -1.0).amax(dim=1)  # the true class out of the maximum
    return 1.0 - (true - other)


SCORES: dict[str, Optional[ScoreFn]] = {"loss": None, "el2n": el2n, "margin": margin}  # None: the losses themselves
BUILT_IN = tuple(SCORES)  # what droppick train's --score offers


def register_score(name: str, fn: ScoreFn) -> None:
    """Make ``DropAndPick(score=name)`` rank samples by ``fn(logits, targets)``: a float tensor, one value
    per row, higher = harder. Register it before building (and before resuming) the engine."""
    if not isinstance(name, str) or not name or name in SCORES:
        raise ValueError(f"a score needs a new, non-empty name; {name!r} is taken or not a string "
                         f"(registered: {', '.join(SCORES)})")
    if not callable(fn):
        raise ValueError(f"score {name!r}: fn must be callable as fn(logits, targets), got {type(fn).__name__}")
    SCORES[name] = fn


def check_score(score) -> str:
    """``score`` if it names a registered score, else a ``ValueError`` listing them."""
    if not isinstance(score, str) or score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)} (or a name given to droppick.scores.register_score); "
                         f"got {score!r}")
    return score


def batch_scores(score: str, losses: torch.Tensor, logits: Optional[torch.Tensor] = None,
                 targets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One batch's scores, detached float32 on the device of ``losses`` (``"loss"``) or of ``logits``,
    a copy (the caller may reuse its tensors). ``losses`` is checked against the indices already."""
    fn = SCORES[score]
    if fn is None:
        return losses.detach().to(torch.float32, copy=True)
    if logits is None or targets is None:
        missing = " and ".join(name for name, t in (("logits", logits), ("targets", targets)) if t is None)
        raise ValueError(f"score {score!r} is computed from each batch's logits and targets; record() got no "
                         f"{missing}: call dap.record(indices, losses, logits=logits, targets=targets) with the "
                         "logits the training step computed (no extra forward pass)")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != losses.numel():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"score {score!r} needs logits of shape (batch, classes) with one row per loss "
                         f"({losses.numel()}); got {shape}")
    if (not isinstance(targets, torch.Tensor) or targets.shape != (losses.numel(),) or targets.dtype.is_floating_point
            or targets.dtype == torch.bool):
        shape = (f"{targets.dtype} of shape {tuple(targets.shape)}" if isinstance(targets, torch.Tensor)
                 else type(targets).__name__)
        raise ValueError(f"score {score!r} needs targets as class indices, an integer tensor of shape ({losses.numel()},); "
                         f"got {shape} (soft or mixed targets: use score='loss')")
    with torch.no_grad():
        logits = logits.detach().float()
        values = fn(logits, targets.to(logits.device, torch.int64)).to(torch.float32)
        if values.shape != (losses.numel(),):
            raise ValueError(f"score {score!r} returned shape {tuple(values.shape)}; it must give one value per "
                             f"sample, ({losses.numel()},)")
        finite = torch.isfinite(logits).all(dim=1) & torch.isfinite(losses.detach()).to(logits.device)
        return torch.where(finite, values, torch.full_like(values, float("nan")))
