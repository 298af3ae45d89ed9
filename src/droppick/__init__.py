"""droppick: Drop-and-Pick (DaP) training, as a library and a command-line tool.

The few lines a training loop needs::

    schedule = DaPSchedule(epochs=300, warmup=40, interval=10, keep=0.9, reuse_at=[150])
    dap = DropAndPick(num_samples=len(train_set), schedule=schedule, policy="dap", seed=0)
    loader = DataLoader(IndexedDataset(train_set), batch_size=128, sampler=dap.sampler())
    ... dap.record(indices, per_sample_losses) every batch, dap.end_epoch() every epoch.
"""

from .data.in_memory import IndexedDataset
from .engine import DropAndPick, NonFiniteLossError
from .sharded_engine import ShardedDropAndPick  # also makes DropAndPick(..., shard_state=True) build one
from .policies import (POLICIES, RS2, EpsilonGreedy, Full, InfoBatch, KeepHardest, KeepHardestAverage,
                       KeepHardestTrusted, KeepHighestReducible, KeepRandom, KeepWindow, Policy, Scaled, Scheduled,
                       SelectiveBackprop, SeTa, Static, backprop_losses)
from .sampler import DaPSampler
from .budget import BudgetRule, budget_rule
from .plan import Plan
from .schedule import DaPSchedule, keep_count
from .version import installed_version

__all__ = [
    "BudgetRule",
    "DaPSchedule",
    "DaPSampler",
    "DropAndPick",
    "EpsilonGreedy",
    "Full",
    "InfoBatch",
    "KeepHardest",
    "KeepHardestAverage",
    "KeepHardestTrusted",
    "KeepHighestReducible",
    "KeepRandom",
    "KeepWindow",
    "Policy",
    "RS2",
    "Scaled",
    "Scheduled",
    "ShardedDropAndPick",
    "SelectiveBackprop",
    "SeTa",
    "Static",
    "IndexedDataset",
    "NonFiniteLossError",
    "Plan",
    "POLICIES",
    "backprop_losses",
    "budget_rule",
    "keep_count",
]
__version__ = installed_version()  # from the metadata: pyproject.toml holds the version
