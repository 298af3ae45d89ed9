"""RS2 without replacement (Okanovic et al., ICLR 2024, "Repeated Random Sampling for Minimizing the
Time-to-Accuracy of Learning"): the matched-compute random baseline that changes every epoch."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..plan import Plan
from ..schedule import DaPSchedule
from ..seeding import generator
from ..selection import extreme_mask
from .base import RESAMPLE, Change, EpochEnd, Policy
from .full import check_target, matched_size

KEY_BITS = 30  # a cycle's random sort keys lie in [0, 2^30 - 1); the last cycle's leftovers 2^30 higher
SERVED = np.iinfo(np.int32).max  # the key of a sample already served in this cycle: after every other


class RS2(Policy):
    """Every epoch trains a fresh chunk of ``round(target_compute * N)`` samples (at least one).

    - target_compute: default, the schedule's planned DaP compute. There is no warm-up and no
      scheduled drop or pick: only the schedule's epochs count.

    The chunks are consecutive stretches of a stream of seeded random permutations of all N
    samples (cycles), so no sample repeats before every sample has been served, and every rank
    draws the same chunks without communicating. A cycle's permutation is held as random sort
    keys (``seeding.generator(seed, "rs2", cycle)``): a sample's place in the cycle is its rank by
    (key, sample index). Taking the next chunk is then one order statistic over the keys, with no
    random memory access (a ``randperm`` of 14M entries alone took longer than DaP's whole drop),
    and a served sample's key is set past every other (``SERVED``). The keys have 30 bits, so
    equal keys are rare (at N = 14M a chunk's boundary falls on a tie about once in 80 chunks);
    they are ordered by sample index.

    A chunk that straddles the end of a cycle takes the r samples left in it and the first
    ``chunk - r`` of the next cycle, whose keys put those r samples last: no chunk holds a sample
    twice, nothing is skipped, and each cycle still serves every sample once. (Dropping the r
    leftovers instead would leave them unserved for a whole cycle; letting them repeat would give
    a chunk fewer than its planned distinct samples.)

    ``plan()`` is exact. State: ``keys`` (int32, 4 bytes per sample), ``position`` (samples of
    the cycle served) and ``cycle`` (cycles drawn). The keys are saved, not only their seed, so a
    resumed run does not depend on torch drawing the same numbers in another version.
    """

    name = "rs2"

    def __init__(self, target_compute: Optional[float] = None):
        self.target_compute = check_target(target_compute)
        self.keys: Optional[torch.Tensor] = None
        self.position = 0
        self.cycle = 0

    def plan(self, schedule: DaPSchedule, num_samples: int) -> Plan:
        m, epochs = matched_size(self.target_compute, schedule, num_samples), schedule.epochs
        event = RESAMPLE if m < num_samples else None  # chunks of all N never change the subset
        return Plan(num_samples, (m,) * epochs, (event,) * (epochs - 1) + (None,))

    def first_subset(self, schedule: DaPSchedule, num_samples: int, seed: int) -> torch.Tensor:
        self.keys, self.position, self.cycle = None, 0, 0
        return self.next_chunk(matched_size(self.target_compute, schedule, num_samples), num_samples, seed)

    def end_epoch(self, end: EpochEnd) -> Optional[Change]:
        m = matched_size(self.target_compute, end.schedule, end.num_samples)
        return Change(self.next_chunk(m, end.num_samples, end.seed), RESAMPLE)

    def next_chunk(self, m: int, num_samples: int, seed: int) -> torch.Tensor:
        """The next ``m`` samples of the stream, as a bool mask over all N."""
        if self.keys is None:
            self.keys = self._draw(num_samples, seed, None)
        left = num_samples - self.position
        leftover = None
        if left < m:  # the rest of this cycle, then the start of the next
            leftover = self.keys.numpy() != SERVED
            self.keys, self.position, m = self._draw(num_samples, seed, leftover), 0, m - left
        chosen = extreme_mask(self.keys.numpy(), m, largest=False)  # served samples' keys come last
        self.keys.numpy()[chosen] = SERVED
        self.position += m
        return torch.from_numpy(chosen if leftover is None else chosen | leftover)

    def _draw(self, num_samples: int, seed: int, last: Optional[np.ndarray]) -> torch.Tensor:
        """The next cycle's keys; the samples ``last`` (the previous cycle's leftovers) after all others."""
        self.cycle += 1
        keys = torch.randint(0, (1 << KEY_BITS) - 1, (num_samples,), generator=generator(seed, "rs2", self.cycle),
                             dtype=torch.int32)
        if last is not None:
            keys.numpy()[last] += 1 << KEY_BITS
        return keys

    def params(self) -> dict:
        return {"target_compute": self.target_compute}

    def state_dict(self) -> dict:
        return {"keys": None if self.keys is None else self.keys.clone(), "position": self.position,
                "cycle": self.cycle}

    def load_state_dict(self, state: dict) -> None:
        self.keys = None if state["keys"] is None else state["keys"].clone()
        self.position, self.cycle = int(state["position"]), int(state["cycle"])
