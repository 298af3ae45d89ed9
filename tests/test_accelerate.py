"""examples/accelerate_dap.py under `accelerate launch`, two CPU processes: every rank the same subsets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

from droppick import DaPSchedule  # noqa: E402
from launch import TIMEOUT_S, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_accelerate_example_two_cpu_processes_agree(tmp_path):
    # `accelerate launch --cpu --num_processes 2` starts one process unless MPI is set up (accelerate
    # 1.x runs multi-CPU through mpirun); its torchrun launcher with ACCELERATE_USE_CPU=1 needs nothing.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()),  # not 29500: tests running beside it use that
           str(ROOT / "examples" / "accelerate_dap.py"), "--out", str(tmp_path)]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"subsets-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2 and ranks[0] == ranks[1]
    plan = DaPSchedule(epochs=6, warmup=1, interval=1, keep=0.7, active=None, reuse_at=[4]).plan(301)
    assert [len(s) for s in ranks[0]["subsets"]] == list(plan.subset_sizes)
    assert ranks[0]["compute_fraction"] == pytest.approx(plan.compute_fraction)
