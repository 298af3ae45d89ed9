"""Rules that keep hard samples but not wrong labels (issue 32): DaP's "keep the highest loss" keeps
a mislabelled sample at every drop, because its loss stays high however well the model learns.

- ``KeepWindow`` ("window"): a loss window, SeTa's idea at DaP's drops. Skip the hardest ``skip``
  share of the subset, keep the next ``k``: the hard-but-learnable middle, not the tail a wrong
  label sits in.
- ``KeepHardestTrusted`` ("trusted"): DaP with the suspects out. The ``share`` x N samples with the
  highest mean loss over the epochs they trained in (``droppick.suspects``), or, given a ``threshold``,
  every sample whose mean is above it, rank last at every drop, so a drop keeps none of them while
  there are others to keep. ``threshold=uniform_guess(score, C)`` (the trainer's ``trusted_suspects
  "uniform"``) needs no share to tune: the suspects are the samples the model has, on average over
  their epochs, given less than an untrained model would, however many that is (none on clean data
  where none are). Picks still return all data, as the
  schedule says (the compute stays the plan's); the next drop leaves the suspects out again.
- ``KeepHighestReducible`` ("rho"): RHO-LOSS's reducible holdout loss (Mindermann et al. 2022) at
  DaP's drops. Each sample's loss less its irreducible loss, the loss of a model trained on a holdout
  split: a wrong or ambiguous label is hard for that model too, so its difference stays low, as does
  an already learnt sample's; what ranks high is learnable and not learnt yet.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..selection import select_hardest
from ..suspects import LossStats

SKIP = 0.1  # droppick's defaults: tune both on a (noisy) validation split
SHARE = 0.1
TRUSTED_SUSPECTS = ("share", "uniform")  # the trainer's readings of "suspect" (KeepHardestTrusted's docstring)


def _share(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


class KeepWindow:
    """At each drop skip the ``round(skip x n)`` highest losses of the ``n`` members and keep the ``k``
    after them (fewer skipped when fewer than ``skip x n + k`` are there; ties to the lower index, an
    unrecorded member counts as hardest, as in ``KeepHardest``). skip = 0 is ``"dap"``."""

    name = "window"

    def __init__(self, skip: float = SKIP):
        self.skip = _share("window skip", skip)

    def select(self, subset: torch.Tensor, losses: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        skipped = min(round(self.skip * subset.numel()), subset.numel() - k)
        if skipped == 0:
            return select_hardest(subset, losses, k)
        top = select_hardest(subset, losses, skipped + k)  # the hardest skipped + k, then leave out the first
        tail = select_hardest(top, losses, skipped)
        return top[~torch.isin(top, tail)]

    def params(self) -> dict:
        return {"window_skip": self.skip}


class KeepHardestTrusted:
    """At each drop keep the ``k`` hardest members this epoch, the suspects ranked last (module
    docstring): the top ``share`` x N mean scores, or those above ``threshold`` where one is given.
    State: the per-sample loss statistics (6 bytes a sample)."""

    name = "trusted"

    def __init__(self, share: float = SHARE, threshold: Optional[float] = None):
        self.share = _share("trusted share", share)
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold)):
            raise ValueError(f"trusted threshold must be a finite number (a mean score, e.g. "
                             f"droppick.suspects.uniform_guess('loss', num_classes)), got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.stats: Optional[LossStats] = None

    def suspected(self) -> torch.Tensor:
        """The indices of the samples ranked last at the next drop (module docstring)."""
        if self.threshold is not None:
            return self.stats.above(self.threshold)
        if not self.share:
            return torch.zeros(0, dtype=torch.long)
        return self.stats.top(round(self.share * self.stats.scores().numel()))[0]

    def observe(self, losses: torch.Tensor) -> None:
        if self.stats is None:
            self.stats = LossStats(losses.numel())
        self.stats.update(losses, torch.isfinite(losses))

    def select(self, subset: torch.Tensor, losses: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        ranked = losses.clone()
        ranked[self.suspected()] = float("-inf")  # below every finite loss: kept only if nothing else is left
        return select_hardest(subset, ranked, k)

    def params(self) -> dict:
        return {"trusted_share": self.share} if self.threshold is None else {"trusted_threshold": self.threshold}

    def state_dict(self) -> dict:
        return {"stats": None if self.stats is None else self.stats.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stats = None
        if state["stats"] is not None:
            self.stats = LossStats(0)
            self.stats.load_state_dict(state["stats"])


class KeepHighestReducible:
    """At each drop keep the ``k`` members with the highest reducible loss ``loss - irreducible[index]``
    (module docstring); ties to the lower index, an unrecorded member (+inf) first and a non-finite one
    (-inf) last, as in ``KeepHardest``. The irreducible losses are float32[N], one per sample, given
    once (here or by ``set_irreducible``) before the first drop: ``droppick train --policy rho`` trains a
    model on its ``--val-samples`` split and scores every training sample with it
    (``droppick.train.irreducible``). State: those losses (4 bytes a sample)."""

    name = "rho"

    def __init__(self, irreducible: Optional[torch.Tensor] = None):
        self.irreducible: Optional[torch.Tensor] = None
        if irreducible is not None:
            self.set_irreducible(irreducible)

    def set_irreducible(self, irreducible) -> None:
        """Each training sample's irreducible loss: a 1-D tensor of N finite numbers, kept as float32."""
        il = torch.as_tensor(irreducible).detach()
        if il.dim() != 1 or il.numel() == 0 or il.dtype == torch.bool or il.is_complex():
            raise ValueError(f"rho's irreducible losses must be a 1-D tensor of one loss per training sample, got "
                             f"{il.dtype} of shape {tuple(il.shape)}")
        il = il.to("cpu", torch.float32).clone()
        bad = (~torch.isfinite(il)).nonzero().squeeze(1)
        if bad.numel():
            raise ValueError(f"rho's irreducible losses must be finite; samples {bad[:10].tolist()} have "
                             f"{il[bad[:10]].tolist()}: the holdout model diverged (lower its learning rate)")
        self.irreducible = il

    def select(self, subset: torch.Tensor, losses: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
        if self.irreducible is None:
            raise RuntimeError("policy rho ranks by each sample's loss less its irreducible loss, and none were given: "
                               "pass them as KeepHighestReducible(irreducible) or call rule.set_irreducible(losses) "
                               "(dap.policy.rule with policy=\"rho\") before the first drop, with float32[N] losses of "
                               "a model trained on a holdout split; droppick train computes them from --val-samples")
        if self.irreducible.numel() != losses.numel():
            raise ValueError(f"rho holds {self.irreducible.numel()} irreducible losses, but the engine has "
                             f"{losses.numel()} samples: give one irreducible loss per training sample")
        return select_hardest(subset, losses - self.irreducible, k)  # +inf and -inf stay: unrecorded first, non-finite last

    def state_dict(self) -> dict:
        return {"irreducible": None if self.irreducible is None else self.irreducible.clone()}

    def load_state_dict(self, state: dict) -> None:
        saved = state["irreducible"]
        self.irreducible = None if saved is None else saved.to(torch.float32).clone()
