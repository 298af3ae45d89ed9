"""The larger, GPU version of the Fashion-MNIST Table 2f report, for a session lent a GPU.

    python experiments/fashion_mnist_gpu.py --out DIR [--budget-minutes M] [--seeds S] [--report-only]

Setting: ResNet-20 on all 60,000 training images (the full 10,000-image test set for
evaluation), batch 512 in bf16 with channels_last, LR 0.2, and the same 30-epoch schedule as the CPU report
(experiments/fashion_mnist_report.py): the paper's CIFAR-10 schedule scaled down by 10 as
Section 4.3.1 scales it for ImageNet, W = 4, I = 1, p = 0.9, R = {15}, LR /10 at 15 and 22.
Three seeds by default, seed by seed, so a session cut short still covers every policy.

The policies run in the order full, dap, scaled, random, static, infobatch. Before each run
the script estimates its time from the full run's (time x the run's planned compute x
ESTIMATE_MARGIN) and skips it if it would end past ``--budget-minutes``; the README lists what was skipped. Runs
are ordinary run directories under ``DIR/runs/`` (finished ones are reused), and
``--report-only`` rewrites the report from the finished ones without training, e.g. on
another machine after copying the run directories back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from _report import log, machine, page_body, setting, utc_now
from droppick.report.compare import aggregate, run_all, run_configs, write_report
from droppick.train.config import TrainConfig
from droppick.train.rundir import RunDir

POLICIES = ["full", "dap", "scaled", "random", "static", "infobatch"]  # most telling first: time may run out
N = 60000
# Per-epoch costs that do not shrink with the subset (evaluation, checkpoints, start-up) make a
# short run cost more than its compute share of full's time: the first GPU DaP run took 0.88 of
# full's time at 0.63 of its compute (before the trainer stopped autotuning partial batches).
ESTIMATE_MARGIN = 1.4
# Batch 512 in bf16 with channels_last: the throughput setting of bench/trainer_speed.py's GPU target,
# so 3 seeds of every policy fit one 15-minute GPU window; LR 0.2 for the 4x batch (0.1 at 128,
# scaled by the square root rather than linearly: there is no LR warm-up).
BASE = TrainConfig(dataset="fashion-mnist", model="resnet20", batch_size=512, lr=0.2, momentum=0.9,
                   weight_decay=5e-4, epochs=30, warmup=4, interval=1, keep=0.9, active=None, reuse_at=[15],
                   lr_milestones=[15, 22], seed=0, device="auto", amp="bf16", channels_last=True)
# --quick: a CPU smoke test of the whole script (the test suite runs it), seconds not minutes.
QUICK = dict(model="resnet8", train_samples=200, test_samples=100, batch_size=64, epochs=4, warmup=1,
             reuse_at=[3], lr_milestones=[3], amp="none", channels_last=False)


def finished(out: Path, configs: dict[str, TrainConfig]) -> dict[str, TrainConfig]:
    return {name: cfg for name, cfg in configs.items() if RunDir(out / "runs" / name).summary_path.exists()}


def train_within_budget(out: Path, configs: dict[str, TrainConfig], budget_s: float, session: dict,
                        save: Callable[[], None], n: int) -> None:
    """Run the configs in order while each is expected to end inside the budget; note in ``session``
    which ones this call trained and which it skipped, calling ``save`` after each."""
    start, full_seconds, done_before = time.monotonic(), None, finished(out, configs)
    for name, cfg in configs.items():
        planned = cfg.schedule.plan(n).compute_fraction if cfg.policy not in ("full", "infobatch") else 1.0
        estimate = None if full_seconds is None else min(full_seconds, full_seconds * planned * ESTIMATE_MARGIN)
        if name not in done_before and estimate is not None and time.monotonic() - start + estimate > budget_s:
            log(f"{name}: skipped, about {estimate:.0f} s would end past the {budget_s:.0f} s budget")
            session["skipped"].append(name)
            continue
        summary = run_all({name: cfg}, out, log=log)[name]
        if name not in done_before:
            session["trained"].append(name)
            save()
        if cfg.policy == "full":
            full_seconds = summary["wall_seconds"]


def write_readme(out: Path, rows: dict, sessions: list[dict]) -> None:
    lines = ["# Drop-and-Pick on Fashion-MNIST, GPU version", "",
             f"This page was written by `python {' '.join(sys.argv)}` {utc_now()} UTC from the runs below.", "",
             setting(__doc__), "",
             "| session (UTC) | command | device | trained | skipped for the time budget | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for s in sessions:
        skipped = "unknown: stopped before it ended" if s["ended"] is None else ", ".join(s["skipped"]) or "none"
        lines.append(f"| {s['started']} | `{s['command']}` | {s['device']} | {', '.join(s['trained']) or 'none'} | "
                     f"{skipped} | {s.get('note', '')} |")
    lines.append("")
    lines += page_body(out / "report.md")
    lines += ["", "## Wall-clock against compute", "", *wall_clock(out, rows)]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def wall_clock(out: Path, rows: dict) -> list[str]:
    """Each policy's train time against full's, and the per-epoch fixed cost a shrinking subset pays.

    The fixed cost is the intercept a of a least-squares fit epoch_seconds = a + b * subset_size
    over a run's epochs after the first (which also pays for start-up).
    """
    if "full" not in rows:
        return ["(no full run yet)"]
    lines = ["| policy | compute | train time / full's | fitted fixed cost per epoch (s) | "
             "fitted seconds per 1,000 samples |", "| --- | ---: | ---: | ---: | ---: |"]
    for policy, r in rows.items():
        m = RunDir(out / "runs" / r["runs"][0]).read_metrics()[1:]
        x, y = [e["subset_size"] for e in m], [e["epoch_seconds"] for e in m]
        fit = "n/a (one subset size) | n/a"
        if len(set(x)) > 1:
            slope, intercept = statistics.linear_regression(x, y)
            fit = f"{intercept:.2f} | {1000 * slope:.3f}"
        lines.append(f"| {policy} | {100 * r['compute_fraction']:.1f}% | "
                     f"{r['train_seconds'] / rows['full']['train_seconds']:.3f} | {fit} |")
    lines += ["", "A fixed cost per epoch is time that does not shrink with the subset, so it keeps wall-clock "
              "savings below compute savings. cuDNN autotuning each epoch's never-seen last-batch size was one "
              "(bench/cudnn_new_shapes.py; the H100 output is bench/cudnn_new_shapes-h100.txt); the trainer "
              "tunes only full batches since then, and the sessions' note column says which runs predate that."]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (run directories and the report)")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="skip runs expected to end past this")
    p.add_argument("--report-only", action="store_true", help="write the report from finished runs; train nothing")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="a tiny CPU-sized version (the test suite's smoke test)")
    args = p.parse_args()
    out = Path(args.out)
    base = TrainConfig.from_dict(BASE.to_dict() | {"device": args.device} | (QUICK if args.quick else {}))
    n = QUICK["train_samples"] if args.quick else N
    by_policy = run_configs(base, POLICIES, list(range(args.seeds)), n)
    # seed-major order: a session cut short has every policy at the first seeds
    configs = {f"{p}-seed{s}": by_policy[f"{p}-seed{s}"] for s in range(args.seeds) for p in POLICIES}
    info = out / "sessions.json"  # which call trained which run on which device, for the README
    sessions = json.loads(info.read_text()) if info.exists() else []
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        session = {"started": utc_now(), "ended": None, "command": f"python {' '.join(sys.argv)}",
                   "device": machine(), "trained": [], "skipped": []}
        sessions.append(session)

        def save() -> None:  # after every run: a session killed by its time limit keeps its record
            info.write_text(json.dumps(sessions, indent=2) + "\n")

        save()  # "ended": None until training ends
        train_within_budget(out, configs, 60.0 * args.budget_minutes, session, save, n)
        session["ended"] = utc_now()
        save()
    done = finished(out, configs)
    if not done:
        raise SystemExit(f"no finished run under {out / 'runs'}: nothing to report")
    summaries = {name: json.loads(RunDir(out / "runs" / name).summary_path.read_text()) for name in done}
    rows = aggregate(done, summaries, out)
    devices = sorted({s["device"] for s in sessions})
    seeds = sorted({cfg.seed for cfg in done.values()})
    write_report(rows, out, "Table 2f on Fashion-MNIST, ResNet-20, GPU", f"Device: {'; '.join(devices)}. Seeds {seeds}.")
    write_readme(out, rows, sessions)
    log(f"report written to {out / 'README.md'}")


if __name__ == "__main__":
    main()
