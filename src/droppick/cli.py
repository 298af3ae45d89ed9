"""The ``droppick`` command line: a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .config import DATASETS, TrainConfig
from .engine import POLICIES
from .schedule import DaPSchedule


def _int_list(text: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs such as 150,225; got {text!r}")


def _optional_int(text: str) -> Optional[int]:
    if text.strip().lower() in ("none", "inf"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none'; got {text!r}")


def _add_schedule_args(p: argparse.ArgumentParser, d: dict) -> None:
    g = p.add_argument_group("Drop-and-Pick schedule (the paper's Table 1)")
    g.add_argument("--epochs", type=int, default=d["epochs"], help="E, total epochs (default %(default)s)")
    g.add_argument("--warmup", type=int, default=d["warmup"], help="W, epochs on all data first (default %(default)s)")
    g.add_argument("--interval", type=int, default=d["interval"], help="I, epochs between drops (default %(default)s)")
    g.add_argument("--keep", type=float, default=d["keep"], help="p, fraction of the subset kept per drop (default %(default)s)")
    g.add_argument("--active", type=_optional_int, default=d["active"],
                   help="alpha, epochs per cycle that drop; 'none' = no limit (default %(default)s)")
    g.add_argument("--reuse-at", type=_int_list, default=d["reuse_at"],
                   help="R, comma-separated epochs after which all data is picked up (default %(default)s)")


def _schedule(args) -> DaPSchedule:
    return DaPSchedule(args.epochs, args.warmup, args.interval, args.keep, args.active, args.reuse_at)


def cmd_plan(args) -> int:
    plan = _schedule(args).plan(args.num_samples)
    if args.plot:
        from .plot import plot_plan

        plot_plan(plan, args.plot)
    if args.json:
        print(json.dumps(plan.to_dict()))
        return 0
    print(f"{'epoch':>6} {'subset':>10}  event")
    for epoch, (size, event) in enumerate(zip(plan.subset_sizes, plan.events), start=1):
        print(f"{epoch:>6} {size:>10}  {event or ''}")
    print(f"compute: {plan.total_samples} of {plan.epochs} x {plan.num_samples} samples = "
          f"{100 * plan.compute_fraction:.2f}% (compute_fraction {plan.compute_fraction:.4f})")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def cmd_train(args) -> int:
    from .train import train

    progress = not args.no_progress
    if args.resume:
        out = args.resume
        summary = train(None, out, resume=True, progress=progress, stop_after=args.stop_after)
    else:
        cfg = TrainConfig(
            dataset=args.dataset, data_dir=args.data_dir, train_samples=args.train_samples,
            test_samples=args.test_samples, model=args.model, batch_size=args.batch_size, lr=args.lr,
            momentum=args.momentum, weight_decay=args.weight_decay, lr_milestones=args.lr_milestones,
            policy=args.policy, epochs=args.epochs, warmup=args.warmup, interval=args.interval, keep=args.keep,
            active=args.active, reuse_at=args.reuse_at, seed=args.seed, device=args.device,
        )
        out = args.out or f"runs/{cfg.dataset}-{cfg.model}-{cfg.policy}-seed{cfg.seed}"
        summary = train(cfg, out, progress=progress, stop_after=args.stop_after)
    if summary is None:
        print(f"stopped after epoch {args.stop_after}; continue with: droppick train --resume {out}")
        return 0
    print(f"{summary['policy']}: final test top-1 {summary['final_test_top1']:.2f}% (best {summary['best_test_top1']:.2f}%), "
          f"compute {100 * summary['compute_fraction']:.1f}% (planned {100 * summary['planned_compute_fraction']:.1f}%), "
          f"{summary['wall_seconds']:.0f} s -> {out}")
    return 0


def cmd_models(args) -> int:
    from .models import build_model, count_parameters, list_models

    for name in list_models():
        n = count_parameters(build_model(name, num_classes=args.num_classes, in_channels=args.in_channels))
        print(f"{name:12s} {n:>12,d} parameters")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="droppick", description="Drop-and-Pick training: plan, train, inspect.")
    sub = parser.add_subparsers(dest="command", required=True)

    plan_defaults = dict(epochs=300, warmup=40, interval=10, keep=0.9, active=None, reuse_at=[150])
    p = sub.add_parser("plan", help="subset size of every epoch and the compute fraction, without training",
                       description="Defaults are the paper's CIFAR-10 baseline (Table 2).")
    _add_schedule_args(p, plan_defaults)
    p.add_argument("--num-samples", type=int, default=50000, help="N, training samples (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="draw subset size against epoch")
    p.set_defaults(func=cmd_plan)

    d = TrainConfig()
    t = sub.add_parser("train", help="train with a policy and write a run directory")
    t.add_argument("--dataset", choices=DATASETS, default=d.dataset)
    t.add_argument("--data-dir", default=None, help="directory with the dataset files (default: standard locations)")
    t.add_argument("--train-samples", type=int, default=None, help="seeded class-stratified slice of the train split")
    t.add_argument("--test-samples", type=int, default=None, help="same for the test split")
    t.add_argument("--model", default=d.model, help="model name, see 'droppick models' (default %(default)s)")
    t.add_argument("--policy", choices=POLICIES, default=d.policy)
    _add_schedule_args(t, d.to_dict())
    t.add_argument("--lr", type=float, default=d.lr, help="initial learning rate (default %(default)s)")
    t.add_argument("--lr-milestones", type=_int_list, default=None,
                   help="epochs after which the LR is divided by 10 (default: the --reuse-at epochs)")
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--momentum", type=float, default=d.momentum)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default %(default)s)")
    t.add_argument("--out", default=None, help="run directory (default runs/DATASET-MODEL-POLICY-seedS)")
    t.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR with its saved config")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="stop once EPOCH is checkpointed (resume later with --resume)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    t.set_defaults(func=cmd_train)

    m = sub.add_parser("models", help="list the model names with their parameter counts")
    m.add_argument("--num-classes", type=int, default=10)
    m.add_argument("--in-channels", type=int, default=1)
    m.set_defaults(func=cmd_models)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"droppick {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
