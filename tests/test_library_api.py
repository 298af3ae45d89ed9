"""The README's few lines, run as written in a user's own loop with a DataLoader."""

import math
import re
from pathlib import Path

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


# -- the README's code blocks, run as written ---------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def user_namespace(n: int = 60) -> dict:
    """What the README's blocks take as given: a train_set, a model, an optimizer and the imports."""
    gen = torch.Generator().manual_seed(0)
    train_set = TensorDataset(torch.randn(n, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen))
    model = torch.nn.Linear(8, 3)
    return {"train_set": train_set, "model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
            "F": F, "DataLoader": DataLoader, "torch": torch}


def test_readme_has_the_library_and_selection_rule_examples():
    blocks = readme_python_blocks()
    assert len(blocks) >= 2 and "dap.record(indices, losses)" in blocks[0] and "class KeepEasiest" in blocks[1]


def test_readme_library_example_runs_as_written():
    ns = user_namespace()
    exec(readme_python_blocks()[0], ns)
    dap = ns["dap"]
    assert dap.done and dap.samples_per_epoch == list(dap.plan().subset_sizes)
    assert dap.compute_fraction == pytest.approx(dap.plan().compute_fraction) and dap.compute_fraction < 1.0
    assert ns["event"] is None  # nothing is decided after the last epoch


def test_readme_selection_rule_example_runs_as_written_and_keeps_the_easiest():
    ns = user_namespace()
    exec(readme_python_blocks()[1], ns)
    dap = ns["dap"]
    assert dap.policy.name == "KeepEasiest"
    for _ in range(5):  # the warm-up, then the first drop
        order = dap.sampler().indices()
        dap.record(order, order.float())  # loss = index: the easiest are the lowest indices
        dap.end_epoch()
    assert dap.subset.tolist() == list(range(54))  # keep 0.9 of 60


def test_the_dap_core_imports_nothing_from_the_trainer_data_models_or_cli():
    import ast

    package = Path(__file__).resolve().parents[1] / "src" / "droppick"
    core = [package / f"{m}.py" for m in ("schedule", "selection", "engine", "sampler", "seeding", "distributed",
                                          "budget")] + sorted((package / "policies").glob("*.py"))
    outside = ("train", "data", "models", "cli", "report", "transfer")
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                names = [node.module or ""] + ([] if node.module else [a.name for a in node.names])
                assert not any(n.split(".")[0] in outside for n in names), f"{path.name} imports {names}"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("droppick"):
                raise AssertionError(f"{path.name}: absolute import of {node.module}")
        assert len(path.read_text().splitlines()) <= 300, path.name


def readme_block(marker: str) -> str:
    (block,) = [b for b in readme_python_blocks() if marker in b]
    return block


def image_namespace(n: int = 60) -> dict:
    """user_namespace with 1x4x4 images, and a model that flattens them."""
    gen = torch.Generator().manual_seed(0)
    train_set = TensorDataset(torch.randn(n, 1, 4, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    return {"train_set": train_set, "model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
            "F": F, "DataLoader": DataLoader, "torch": torch}


def test_readme_lightning_block_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("pytorch_lightning")
    monkeypatch.chdir(tmp_path)  # Lightning writes lightning_logs/ and checkpoints/ in the working directory
    ns = image_namespace()
    exec(readme_block("DropAndPickCallback"), ns)
    dap = ns["cb"].dap
    assert dap.done and dap.samples_per_epoch == list(dap.plan().subset_sizes)
    assert dap.compute_fraction == pytest.approx(dap.plan().compute_fraction) and dap.compute_fraction < 1.0


def test_readme_accelerate_block_runs_as_written():
    pytest.importorskip("accelerate")
    ns = image_namespace()
    exec(readme_block("accelerator.prepare"), ns)
    dap = ns["dap"]
    assert dap.done and dap.samples_per_epoch == list(dap.plan().subset_sizes)


def test_readme_floor_and_beyond_the_paper_block_runs_as_written():
    ns = user_namespace()
    exec(readme_block("EpsilonGreedy(0.2)"), ns)
    dap, rs2 = ns["dap"], ns["rs2"]
    assert min(dap.plan().subset_sizes) == 6 == math.ceil(0.1 * 60)  # p = 0.8 alone would go down to 1
    assert set(rs2.plan().subset_sizes) == {round(dap.plan().compute_fraction * 60)}
    while not dap.done:
        order = dap.sampler().indices()
        dap.record(order, order.float())
        dap.end_epoch()
    assert dap.samples_per_epoch == list(dap.plan().subset_sizes) and dap.policy.name == "epsilon"
