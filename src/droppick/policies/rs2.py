"""RS2 without replacement (Okanovic et al., ICLR 2024, "Repeated Random Sampling for Minimizing the
Time-to-Accuracy of Learning"): the matched-compute random baseline that changes every epoch."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..schedule import DaPSchedule, Plan
from ..seeding import generator
from .base import RESAMPLE, Change, EpochEnd, Policy
from .full import check_target, matched_size


class RS2(Policy):
    """Every epoch trains a fresh chunk of ``round(target_compute * N)`` samples (at least one).

    target_compute: default, the schedule's planned DaP compute. There is no warm-up and no
    scheduled drop or pick: only the schedule's epochs count.

    The chunks are consecutive stretches of a stream of seeded permutations of all N samples
    (``seeding.generator(seed, "rs2", cycle)`` for the cycle-th), so no sample repeats before
    every sample has been served, and every rank draws the same chunks without communicating.
    A chunk that straddles the end of a permutation takes the r samples left in it and the
    first ``chunk - r`` of the next permutation, which is drawn with those r samples moved to its
    end (in the order they had, itself random): no chunk holds a sample twice, nothing served is
    skipped, and each permutation still serves every sample once. (Dropping the r leftovers instead
    would leave them unserved for a whole cycle; letting them repeat would give a chunk fewer
    than its planned distinct samples.)

    ``plan()`` is exact. State: ``permutation`` (int32 when N allows, 4 bytes per sample),
    ``position`` (entries of it served) and ``cycle`` (permutations drawn). The permutation
    itself is saved, not only its seed, so a resumed run does not depend on torch drawing the
    same permutation from the same seed in another version.
    """

    name = "rs2"

    def __init__(self, target_compute: Optional[float] = None):
        self.target_compute = check_target(target_compute)
        self.permutation: Optional[torch.Tensor] = None
        self.position = 0
        self.cycle = 0

    def plan(self, schedule: DaPSchedule, num_samples: int) -> Plan:
        m, epochs = matched_size(self.target_compute, schedule, num_samples), schedule.epochs
        event = RESAMPLE if m < num_samples else None  # chunks of all N never change the subset
        return Plan(num_samples, (m,) * epochs, (event,) * (epochs - 1) + (None,))

    def first_subset(self, schedule: DaPSchedule, num_samples: int, seed: int) -> torch.Tensor:
        self.permutation, self.position, self.cycle = None, 0, 0
        return self.next_chunk(matched_size(self.target_compute, schedule, num_samples), num_samples, seed)

    def end_epoch(self, end: EpochEnd) -> Optional[Change]:
        m = matched_size(self.target_compute, end.schedule, end.num_samples)
        return Change(self.next_chunk(m, end.num_samples, end.seed), RESAMPLE)

    def next_chunk(self, m: int, num_samples: int, seed: int) -> torch.Tensor:
        """The next ``m`` samples of the stream, as a bool mask over all N (a mask, not sorted
        indices: one scatter and the engine's compaction cost far less than a sort at 14M)."""
        chosen = np.zeros(num_samples, dtype=bool)
        if self.permutation is None:
            self.permutation = self._draw(num_samples, seed)
        permutation, left = self.permutation.numpy(), num_samples - self.position
        if left >= m:
            chosen[permutation[self.position:self.position + m]] = True
            self.position += m
        else:
            tail = permutation[self.position:]
            chosen[tail] = True  # now marks the leftovers, which go to the end of the next permutation
            fresh = self._draw(num_samples, seed).numpy()
            permutation = np.concatenate([fresh[~chosen[fresh]], tail])
            chosen[permutation[:m - left]] = True
            self.permutation, self.position = torch.from_numpy(permutation), m - left
        return torch.from_numpy(chosen)

    def _draw(self, num_samples: int, seed: int) -> torch.Tensor:
        self.cycle += 1
        dtype = torch.int32 if num_samples <= torch.iinfo(torch.int32).max else torch.int64
        return torch.randperm(num_samples, generator=generator(seed, "rs2", self.cycle), dtype=dtype)

    def params(self) -> dict:
        return {"target_compute": self.target_compute}

    def state_dict(self) -> dict:
        return {"permutation": None if self.permutation is None else self.permutation.clone(),
                "position": self.position, "cycle": self.cycle}

    def load_state_dict(self, state: dict) -> None:
        self.permutation = None if state["permutation"] is None else state["permutation"].clone()
        self.position, self.cycle = int(state["position"]), int(state["cycle"])
