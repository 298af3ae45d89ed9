"""The policies ``DropAndPick`` accepts, by name or as objects (see ``base`` for the two kinds).

- "dap": the schedule's drops keep the highest-loss samples (the paper)
- "random": the same schedule, a uniform choice at each drop (Table 2f, "Random")
- "full": all data every epoch (the 100% baseline)
- "scaled": all data for round(E * target_compute) epochs (Table 2f, "All data 63% epochs")
- "static": one fixed stratified subset of target_compute * N samples (Table 2f, "63% data")
- "infobatch": InfoBatch's soft pruning and annealing (Qin et al., ICLR 2024); with target_compute
  its ratio is calibrated to that compute
- "rs2": a fresh chunk of target_compute * N samples every epoch, without replacement across epochs
  (Okanovic et al., ICLR 2024)
- "epsilon": the schedule's drops keep the hardest (1 - eps) k and eps k at random from the rest
  (Raju et al. 2021); eps = epsilon.EPSILON unless given
- "ema": the schedule's drops keep the highest moving average of each sample's losses across epochs;
  beta = ema.BETA unless given
- "window": the schedule's drops skip the hardest share of the subset and keep the next (noise.py)
- "trusted": the schedule's drops keep the hardest but rank the suspected wrong labels last (noise.py)
- "rho": the schedule's drops keep the highest loss less a holdout model's loss, RHO-LOSS's reducible
  loss (Mindermann et al. 2022; noise.py); its irreducible losses are given to the rule before the first drop
- "seta": SeTa (Zhou et al., CVPR 2025): a random share, loss clusters and a sliding window every epoch
- "selective_backprop": all data, each batch back-propagating a loss-weighted part (Jiang et al. 2019)
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import DROP, EXCLUDE, PICK, PRUNE, RESAMPLE, Change, EpochEnd, Policy, checked_selection
from .dap import KeepHardest
from .ema import BETA, KeepHardestAverage
from .epsilon import EPSILON, EpsilonGreedy
from .full import Full, Scaled
from .infobatch import InfoBatch
from .noise import SHARE, SKIP, KeepHardestTrusted, KeepHighestReducible, KeepWindow
from .random import KeepRandom
from .selective_backprop import SelectiveBackprop, backprop_losses
from .seta import SeTa
from .rs2 import RS2
from .scheduled import Scheduled
from .static import Static

POLICIES = ("dap", "random", "full", "scaled", "static", "infobatch", "rs2", "epsilon", "ema", "window", "trusted", "rho",
            "seta", "selective_backprop")
# The training config's settings each policy reads (TrainConfig's field names). A run of another policy
# ignores them, so a run that changes one is refused (train.config) rather than silently trained without it.
SETTINGS = {"infobatch": ("infobatch_ratio", "infobatch_delta"), "epsilon": ("epsilon",), "ema": ("ema_beta",),
            "window": ("window_skip",), "trusted": ("trusted_share", "trusted_suspects"), "rho": ("rho_epochs",),
            "seta": ("seta_ratio", "seta_groups", "seta_window", "seta_delta"),
            "selective_backprop": ("sb_keep", "sb_start", "sb_end", "sb_interrupt")}


def build_policy(policy, *, target_compute: Optional[float] = None, labels: Optional[torch.Tensor] = None,
                 infobatch_ratio: float = 0.5, infobatch_delta: float = 0.875, epsilon: Optional[float] = None,
                 ema_beta: Optional[float] = None, window_skip: Optional[float] = None,
                 trusted_share: Optional[float] = None, trusted_threshold: Optional[float] = None,
                 seta: Optional[dict] = None,
                 selective_backprop: Optional[dict] = None) -> Policy:
    """A ``Policy`` from a name (with the settings that name uses), a ``Policy``, or a selection rule."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        named = {
            "dap": lambda: Scheduled(KeepHardest()),
            "random": lambda: Scheduled(KeepRandom()),
            "full": Full,
            "scaled": lambda: Scaled(target_compute),
            "static": lambda: Static(target_compute, labels),
            "infobatch": lambda: InfoBatch(infobatch_ratio, infobatch_delta, target_compute),
            "rs2": lambda: RS2(target_compute),
            "epsilon": lambda: Scheduled(EpsilonGreedy(EPSILON if epsilon is None else epsilon)),
            "ema": lambda: Scheduled(KeepHardestAverage(BETA if ema_beta is None else ema_beta)),
            "window": lambda: Scheduled(KeepWindow(SKIP if window_skip is None else window_skip)),
            "trusted": lambda: Scheduled(KeepHardestTrusted(SHARE if trusted_share is None else trusted_share,
                                                            trusted_threshold)),
            "rho": lambda: Scheduled(KeepHighestReducible()),
            "seta": lambda: SeTa(**(seta or {}), target_compute=target_compute),
            "selective_backprop": lambda: SelectiveBackprop(**(selective_backprop or {})),
        }
        if policy not in named:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)} or an object with a select() method; "
                             f"got {policy!r}")
        return named[policy]()
    return Scheduled(policy)


__all__ = [
    "DROP", "EXCLUDE", "PICK", "SHARE", "SKIP", "PRUNE", "POLICIES", "RESAMPLE", "SETTINGS", "RS2", "Change", "EpochEnd",
    "EpsilonGreedy", "Full", "InfoBatch", "KeepHardest", "KeepHardestAverage", "KeepHardestTrusted",
    "KeepHighestReducible", "KeepRandom", "KeepWindow", "Policy", "Scaled", "Scheduled", "SelectiveBackprop", "SeTa",
    "Static", "backprop_losses", "build_policy", "checked_selection"
]
