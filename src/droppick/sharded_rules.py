"""The rules that decide over sharded state, and why the others cannot.

``select_rule`` keeps, over the ranks' slices, exactly the members a built-in rule's ``select``
keeps over all N, drawing from the same generator: the hardest by ``sharded.select_hardest_sharded``
(``dap``, ``ema`` by its average, ``window`` twice, ``trusted`` after ranking its suspects last),
the random picks by ``sharded.draw_members`` (``random``, ``epsilon``). ``check_shardable`` refuses
the rest, saying why.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .policies import (EpsilonGreedy, KeepHardest, KeepHardestAverage, KeepHardestTrusted, KeepRandom, KeepWindow,
                       Policy, Scheduled)
from .policies.epsilon import random_count
from .sharded import Ranks, draw_members, select_hardest_sharded

SHARDED_RULES = (KeepHardest, KeepHardestAverage, EpsilonGreedy, KeepRandom, KeepWindow, KeepHardestTrusted)
REFUSED = {
    "rs2": "RS2 draws each cycle's random keys for all N samples from one generator stream, so a rank "
           "cannot draw its slice of them without drawing all N (sharding it is not done yet)",
    "infobatch": "InfoBatch weights every batch by per-sample weights, read for samples of any rank's "
                 "slice, and draws N random numbers every epoch (sharding it is not done yet)",
    "rho": "rho's irreducible losses are one float32[N] tensor handed to the rule whole, which the sharded "
           "engine would have to slice and checkpoint per rank (sharding it is not done yet)",
}


def check_shardable(policy: Policy) -> None:
    """Nothing, or a ``ValueError`` saying why ``policy`` cannot run with ``shard_state=True``."""
    if type(policy) is Scheduled:
        if type(policy.rule) in SHARDED_RULES:
            return
        why = REFUSED.get(policy.name, "its select() reads the losses of all N samples, which no rank holds when the "
                                       "state is sharded")
        raise ValueError(f"shard_state=True cannot run the selection rule {policy.name!r}: {why}. Use one of dap, "
                         "ema, epsilon, random, window, trusted, or shard_state=False")
    if type(policy).end_epoch is Policy.end_epoch and type(policy).batch_weights is Policy.batch_weights:
        return  # full, scaled, static: nothing decided after the first subset, nothing weighted
    why = REFUSED.get(policy.name, "its end_epoch() reads the losses of all N samples, which no rank holds")
    raise ValueError(f"shard_state=True cannot run the policy {policy.name!r}: {why}. Use shard_state=False")


def rule_values(rule) -> Optional[np.ndarray]:
    """What a rule with per-sample state ranks by, over the slice it observed: the EMA rule's
    averages, the trusted rule's mean losses (its suspects' scores); None for the others."""
    if isinstance(rule, KeepHardestAverage):
        return rule.average.numpy()
    if isinstance(rule, KeepHardestTrusted):
        return rule.stats.scores().numpy()
    return None


def select_rule(rule, members: Sequence[np.ndarray], losses: Sequence[np.ndarray], k: int, generator: torch.Generator,
                ranks: Ranks, num_samples: int, values: Optional[Sequence[np.ndarray]] = None) -> list[np.ndarray]:
    """``rule.select`` over sharded state: masks of the members it keeps, the same members it keeps
    unsharded, drawn from the same ``generator``. ``values``: ``rule_values`` of each held slice."""
    def hardest(of, by, count):
        return select_hardest_sharded(by, of, count, ranks)

    if isinstance(rule, KeepHardestAverage):
        return hardest(members, values, k)
    if isinstance(rule, KeepRandom):
        return draw_members(members, k, generator, ranks)
    if isinstance(rule, EpsilonGreedy):
        n_random = random_count(k, rule.epsilon)
        keep = hardest(members, losses, k - n_random)
        if not n_random:
            return keep
        drawn = draw_members([m & ~h for m, h in zip(members, keep)], n_random, generator, ranks)
        return [h | d for h, d in zip(keep, drawn)]
    if isinstance(rule, KeepWindow):  # skip the hardest `skipped`, keep the k after them
        n = int(ranks.per_rank([np.count_nonzero(m) for m in members]).sum())
        skipped = min(round(rule.skip * n), n - k)
        top = hardest(members, losses, skipped + k)
        return [t & ~s for t, s in zip(top, hardest(top, losses, skipped))]
    if isinstance(rule, KeepHardestTrusted):  # its suspects (KeepHardestTrusted.suspected) rank last
        suspected = None
        if rule.threshold is not None:  # each slice's own: above the threshold
            suspected = [v > rule.threshold for v in values]
        elif rule.share:  # the highest mean losses of all N
            suspected = hardest([np.ones(v.size, dtype=bool) for v in values], values, round(rule.share * num_samples))
        if suspected is not None:
            losses = [np.where(s, np.float32(-np.inf), x) for s, x in zip(suspected, losses)]
    return hardest(members, losses, k)
