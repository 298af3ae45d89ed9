"""What a schedule does to N samples: every epoch's subset size and the decision taken after it,
and the compute that costs. Pure data, derived by ``DaPSchedule.plan`` (and each policy's ``plan``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DROP = "drop"
PICK = "pick"


@dataclass(frozen=True)
class Plan:
    """What a schedule does to N samples, epoch by epoch (index 0 is epoch 1)."""

    num_samples: int
    subset_sizes: tuple[int, ...]  # samples trained on in each epoch
    events: tuple[Optional[str], ...]  # decision taken after each epoch: "drop", "pick", "prune", "resample" or None
    reference_epochs: Optional[int] = None  # epochs of the all-data run compute is measured against;
    # None: as many as this plan's (only "scaled" trains fewer epochs than the run it is compared with)

    @property
    def epochs(self) -> int:
        return len(self.subset_sizes)

    @property
    def drop_epochs(self) -> list[int]:
        return [e for e, ev in enumerate(self.events, start=1) if ev == DROP]

    @property
    def pick_epochs(self) -> list[int]:
        return [e for e, ev in enumerate(self.events, start=1) if ev == PICK]

    @property
    def total_samples(self) -> int:
        return sum(self.subset_sizes)

    @property
    def full_samples(self) -> int:
        """Samples the all-data run trains on: E * N."""
        return (self.reference_epochs or self.epochs) * self.num_samples

    @property
    def compute_fraction(self) -> float:
        """Samples trained on over E * N: the paper's "computation" (Section 4.1)."""
        return self.total_samples / self.full_samples

    def to_dict(self) -> dict:
        return {
            "num_samples": self.num_samples,
            "epochs": self.epochs,
            "compute_fraction": self.compute_fraction,
            "total_samples": self.total_samples,
            "subset_sizes": list(self.subset_sizes),
            "drop_epochs": self.drop_epochs,
            "pick_epochs": self.pick_epochs,
        }
