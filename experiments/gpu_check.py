"""Everything a GPU session measures, in one command that fits an 8-minute slot:

    python experiments/gpu_check.py                      # on a GPU: writes experiments/gpu-check/
    python experiments/gpu_check.py --device cpu --quick --out DIR   # the test suite's smoke run

Steps, each a subprocess with its own time limit (a step that fails or runs out is recorded and
the next one runs):
1. bench/trainer_speed.py: ResNet-20, batch 512, bf16, channels_last; the trainer against an
   airbench-style hand loop (data and augmentation on the device) and the 50,000 images/s target;
2. bench/savings.py: DaP's train time over full's against the planned compute (within 0.03);
3. bench/device_decode.py: ImageFolder JPEGs decoded on the GPU (--decode device) against Pillow
   in the DataLoader workers;
4. experiments/fashion_mnist_gpu.py: the Fashion-MNIST GPU report (every policy, 3 seeds) in
   the time left, into OUT/fashion-mnist-gpu/ (checkpoints are deleted after: the report keeps
   configs, metrics and summaries).
OUT/README.md gets the device, torch version, date, command, each step's exit status and
seconds, and the benchmarks' PASS/FAIL lines; OUT/checks.log their whole output.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def describe_device(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    return f"CPU ({os.cpu_count()} cores)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="seconds per step: a smoke test of the script itself")
    p.add_argument("--out", default=str(REPO / "experiments" / "gpu-check"))
    p.add_argument("--budget-seconds", type=float, default=480.0, help="for the whole script (default 8 minutes)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quick = ["--quick"] if args.quick else []
    started = time.monotonic()
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               PYTHONUNBUFFERED="1")
    # The GPU target's setting; a CPU (the smoke run) keeps the CPU benchmark's, bf16 there is 10x slower.
    gpu_setting = ["--batch-size", "512", "--amp", "bf16", "--channels-last"] if args.device.startswith("cuda") else []
    steps = [
        ("trainer speed", 150, [sys.executable, "bench/trainer_speed.py", "--device", args.device, *gpu_setting, *quick]),
        ("savings", 150, [sys.executable, "bench/savings.py", "--device", args.device, *quick]),
        ("device decode", 90, [sys.executable, "bench/device_decode.py", "--device", args.device, *quick]),
    ]
    rows, verdicts = [], []
    log = out / "checks.log"
    log.write_text("")
    for name, limit, argv in steps:
        rows.append(run_step(name, limit, argv, env, log, verdicts))
    left = args.budget_seconds - (time.monotonic() - started) - 20
    report = out / "fashion-mnist-gpu"
    argv = [sys.executable, "experiments/fashion_mnist_gpu.py", "--out", str(report), "--device", args.device,
            "--budget-minutes", f"{max(left - 30, 0) / 60:.2f}", *quick, *(["--seeds", "1"] if args.quick else [])]
    rows.append(run_step("fashion-mnist gpu report", max(left, 30), argv, env, log, verdicts))
    for checkpoint in report.glob("runs/*/checkpoint-*.pt*"):
        checkpoint.unlink()  # the report keeps configs, metrics and summaries; a resume needs a rerun
    lines = ["# GPU check", "",
             f"Written by `python {' '.join(sys.argv)}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"device {describe_device(args.device)}, torch {torch.__version__}"
             + (" (--quick: a smoke run of the script, not a measurement)" if args.quick else "") + ".", "",
             "| step | exit status | seconds |", "| --- | ---: | ---: |",
             *[f"| {name} | {status} | {seconds:.0f} |" for name, status, seconds in rows], "",
             "Verdicts (from the benchmarks' own output, full text in [checks.log](checks.log)):", "",
             *[f"- {v}" for v in verdicts], "",
             "The Fashion-MNIST report: [fashion-mnist-gpu/README.md](fashion-mnist-gpu/README.md)."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(status == 0 for _, status, _ in rows) else 1


def run_step(name: str, limit: float, argv: list[str], env: dict, log: Path, verdicts: list[str]):
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit)
        status, output = proc.returncode, proc.stdout + proc.stderr[-3000:]
    except subprocess.TimeoutExpired as e:
        status = f"timed out after {limit:.0f} s"
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    with open(log, "a") as f:
        f.write(f"=== {name}: {' '.join(argv)} ===\n{output}\n=== {name}: exit {status} ===\n")
    verdicts += [f"{name}: {line}" for line in output.splitlines() if re.match(r"(PASS|FAIL) ", line)]
    return name, status, time.monotonic() - t0


if __name__ == "__main__":
    raise SystemExit(main())
