"""The README's few lines, run as written in a user's own loop with a DataLoader, and every ```python
block of the README and of the docs pages (docs/), run as printed."""

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
            losses.mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            seen += indices.tolist()
        assert sorted(seen) == dap.subset.tolist()  # the loader served exactly the subset
        seen_per_epoch.append(len(seen))
        dap.end_epoch()

    plan = schedule.plan(len(train_set))
    assert seen_per_epoch == list(plan.subset_sizes) == [90, 90, 90, 45, 90, 90]
    assert dap.compute_fraction == pytest.approx(plan.compute_fraction)
    assert dap.subset.dtype == torch.int64 and bool((dap.subset[1:] > dap.subset[:-1]).all())


# -- the code blocks of the README and the docs, run as written ----------------------------------

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def doc_pages() -> list[Path]:
    """The README and every page of the documentation site, the README first."""
    return [README] + sorted((ROOT / "docs").rglob("*.md"))


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


def readme_python_blocks() -> list[str]:
    """Every ```python block of the README and the docs pages, in that order."""
    return [block for page in doc_pages() for block in python_blocks(page)]


def user_namespace(n: int = 60) -> dict:
    """What the README's blocks take as given: a train_set, a model, an optimizer and the imports."""
    gen = torch.Generator().manual_seed(0)
    train_set = TensorDataset(torch.randn(n, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen))
    model = torch.nn.Linear(8, 3)
    return {"train_set": train_set, "model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
            "F": F, "DataLoader": DataLoader, "torch": torch}


def test_the_readme_opens_with_the_library_example():
    blocks = python_blocks(README)
    assert blocks and blocks[0] == readme_block("for indices, images, targets in loader")
    assert "dap.record(indices, losses)" in blocks[0]


def test_readme_library_example_runs_as_written():
    ns = user_namespace()
    exec(readme_block("for indices, images, targets in loader"), ns)
    dap = ns["dap"]
    assert dap.done and dap.samples_per_epoch == list(dap.plan().subset_sizes)
    assert dap.compute_fraction == pytest.approx(dap.plan().compute_fraction) and dap.compute_fraction < 1.0
    assert ns["event"] is None  # nothing is decided after the last epoch


def test_readme_selection_rule_example_runs_as_written_and_keeps_the_easiest():
    ns = user_namespace()
    exec(readme_block("class KeepEasiest"), ns)
    dap = ns["dap"]
    assert dap.policy.name == "KeepEasiest"
    for _ in range(5):  # the warm-up, then the first drop
        order = dap.sampler().indices()
        dap.record(order, order.float())  # loss = index: the easiest are the lowest indices
        dap.end_epoch()
    assert dap.subset.tolist() == list(range(54))  # keep 0.9 of 60


def test_the_dap_core_modules_stay_short():
    # what the core may import is a rule of tests/test_layering.py, with the other layers' rules
    package = Path(__file__).resolve().parents[1] / "src" / "droppick"
    core = [package / f"{m}.py" for m in ("schedule", "plan", "selection", "engine", "sampler", "seeding", "distributed",
                                          "suspects", "budget", "records", "scores", "sharded", "sharded_engine", "sharded_rules",
                                          "sharded_state")
            ] + sorted((package / "policies").glob("*.py"))
    for path in core:
        assert len(path.read_text().splitlines()) <= 300, path.name


def readme_block(marker: str) -> str:
    """The one ```python block of the README or the docs that contains ``marker``."""
    found = [b for b in readme_python_blocks() if marker in b]
    assert len(found) == 1, f"{len(found)} python blocks in the README and docs/ contain {marker!r}, not 1"
    return found[0]


def test_every_python_block_of_the_readme_and_the_docs_is_run_by_a_test():
    """Each block holds exactly one marker that a test passes to readme_block (and execs), so a
    block added, moved between pages or edited out of its marker fails here, not silently."""
    calls = re.compile(r"""readme_block\(\s*["']([^"']+)["']\s*\)""")
    markers = {m for path in Path(__file__).parent.glob("test_*.py") for m in calls.findall(path.read_text())}
    blocks = readme_python_blocks()
    fences = [line for page in doc_pages() for line in page.read_text().splitlines() if line.lstrip().startswith("```py")]
    assert len(fences) == len(blocks) >= 6, "a python block this finder does not read (indented, or ```py ...)"
    assert markers
    for block in blocks:
        matched = [m for m in markers if m in block]
        assert len(matched) == 1, f"this block is matched by {matched}, not by one test's marker:\n{block}"


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
    exec(readme_block("cb.dap.compute_fraction"), ns)
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
