"""The README's few lines, run as written in a user's own loop with a DataLoader."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from droppick import DaPSchedule, DropAndPick, IndexedDataset


def test_readme_loop_trains_on_the_planned_subsets():
    gen = torch.Generator().manual_seed(0)
    images, targets = torch.randn(90, 8, generator=gen), torch.randint(0, 3, (90,), generator=gen)
    train_set = TensorDataset(images, targets)
    model = torch.nn.Linear(8, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    schedule = DaPSchedule(epochs=6, warmup=1, interval=2, keep=0.5, active=None, reuse_at=[4])
    dap = DropAndPick(num_samples=len(train_set), schedule=schedule, policy="dap", seed=0)
    loader = DataLoader(IndexedDataset(train_set), batch_size=16, sampler=dap.sampler())
    seen_per_epoch = []
    for epoch in range(1, schedule.epochs + 1):
        assert dap.epoch == epoch
        seen = []
        for indices, x, y in loader:
            losses = F.cross_entropy(model(x), y, reduction="none")
            dap.record(indices, losses)
            losses.mean().backward(); optimizer.step(); optimizer.zero_grad()
            seen += indices.tolist()
        assert sorted(seen) == dap.subset.tolist()  # the loader served exactly the subset
        seen_per_epoch.append(len(seen))
        dap.end_epoch()

    plan = schedule.plan(len(train_set))
    assert seen_per_epoch == list(plan.subset_sizes) == [90, 90, 90, 45, 90, 90]
    assert dap.compute_fraction == pytest.approx(plan.compute_fraction)
    assert dap.subset.dtype == torch.int64 and bool((dap.subset[1:] > dap.subset[:-1]).all())
