"""The ``droppick`` command line: a thin layer over the library.

Flags not given on the command line are absent (argparse.SUPPRESS), so a value is taken from,
in increasing priority: the defaults, the recipe (``--recipe``), the flags, ``--set key=value``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from ..train.config import AMP_MODES, COMPILE_MODES, DECODE_MODES, DATASETS, LR_SCHEDULES, SCORES, TrainConfig
from ..train.epochs import FOLLOWS_SCHEDULE, describe_schedule, follow_epochs
from ..policies import POLICIES
from ..policies.noise import TRUSTED_SUSPECTS
from ..budget import describe_budget
from ..distributed import RankDisagreementError
from ..train.recipes import load_recipe, parse_overrides
from ..version import installed_version
from .args import add_schedule_args, dataset_name, flag, given, int_list, refuse_budget_conflicts
from .plan import add_plan_parser, add_recipes_parser


def cmd_train(args) -> int:
    from .. import distributed
    from ..train.trainer import train

    progress = not args.no_progress
    if args.resume and args.auto_resume:
        raise ValueError("--resume and --auto-resume exclude each other: --resume RUN_DIR continues a run with its "
                         "saved config; --auto-resume (with the run's own flags and --out) starts it or continues it")
    if args.resume:
        out = args.resume
        ignored = [f"--{key.replace('_', '-')}" for key in given(args, TrainConfig.keys())]
        ignored += ["--recipe"] * bool(args.recipe_name) + ["--set"] * bool(args.set) + ["--out"] * bool(args.out)
        if ignored:
            raise ValueError(f"--resume continues {out} with its saved config.json; remove {' '.join(ignored)} "
                             "(to train with other settings, start a new run with --out)")
        summary = train(None, out, resume=True, progress=progress, stop_after=args.stop_after)
    else:
        cfg = _config_from_args(args)
        out = args.out or f"runs/{cfg.recipe or cfg.dataset + '-' + cfg.model + '-' + cfg.policy}-seed{cfg.seed}"
        summary = train(cfg, out, progress=progress, stop_after=args.stop_after, auto_resume=args.auto_resume)
    main, ranked = distributed.is_main_process(), distributed.is_initialized()
    distributed.shutdown()  # leave the process group train() joined under torchrun cleanly
    if main and summary is None:
        again = "the same command line (--auto-resume)" if args.auto_resume else f"droppick train --resume {out}"
        print(f"stopped after epoch {args.stop_after} (or it had already passed it); continue with: {again}")
    elif main:
        print(f"{summary['policy']}: final test top-1 {summary['final_test_top1']:.2f}% (best "
              f"{summary['best_test_top1']:.2f}%), compute {100 * summary['compute_fraction']:.1f}% (planned "
              f"{100 * summary['planned_compute_fraction']:.1f}%), {summary['wall_seconds']:.0f} s -> {out}")
    if ranked:
        distributed.exit_done()
    return 0


def cmd_compare(args) -> int:
    from ..report.compare import compare, dataset_size

    base = _config_from_args(args)
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = sorted(set(policies) - set(POLICIES))
    if unknown:
        raise ValueError(f"unknown policies {unknown}; choose from {', '.join(POLICIES)}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = [base.seed + i for i in range(args.seeds)]
    out = args.out or f"runs/compare-{base.recipe or base.dataset + '-' + base.model}"
    rows = compare(base, policies, seeds, out, num_samples=dataset_size(base), progress=not args.no_progress)
    for policy, r in rows.items():
        print(f"{policy:10s} compute {100 * r['compute_fraction']:5.1f}%  top-1 {r['top1_mean']:.2f} ± {r['top1_std']:.2f}")
    print(f"report: {out}/report.md")
    if base.tensorboard:
        print(f"curves of every run: tensorboard --logdir {out}/runs")
    return 0


def cmd_demo(args) -> int:
    from ..report.demo import demo, demo_table

    if hasattr(args, "policy"):
        raise ValueError("droppick demo trains policies full and dap; remove --policy "
                         "(droppick compare --policies trains others)")
    result = demo(_config_from_args(args), args.out, progress=not args.no_progress)
    print(demo_table(result))
    return 0


def cmd_inspect(args) -> int:
    from ..report.inspection import inspect_run

    result = inspect_run(args.run, out=args.out, count=args.count)
    for row in result["classes"]:
        print(f"{row['class']:>4} {row['name']:14s} keep rate {100 * row['keep_rate']:5.1f}%  "
              f"never dropped {100 * row['never_dropped']:5.1f}%")
    print(f"wrote hardest.png, easiest.png, inspect.md to {result['out']}")
    return 0


def cmd_suspects(args) -> int:
    from ..report.suspects import find_suspects

    top = args.top if args.top == "flagged" else int(args.top) if args.top.isdigit() else -1
    if top != "flagged" and top < 1:
        raise ValueError(f"--top must be a positive number of suspects or 'flagged', got {args.top!r}")
    result = find_suspects(args.run, top=top)
    for row in result["rows"][:10]:
        print(f"{row['index']:>8} given {row['given_label']:>3} model {str(row['predicted_label']):>3} "
              f"mean {result['score']} {row['score']:.3f} over {row['epochs_trained']} epochs")
    flagged, n = result["flagged"], result["samples"]
    print(f"flagged: {flagged} of the {n} training samples ({flagged / n:.1%}) score worse on average than a uniform "
          "guess would")
    if "flipped_total" in result:
        print(f"{result['flipped_in_top']} of the top {len(result['rows'])} are among the run's {result['flipped_total']} "
              "flipped labels (label_noise.json)")
    print(f"wrote suspects.csv ({len(result['rows'])} rows, most suspect first) and suspects.png to {result['out']}")
    return 0


def cmd_eval(args) -> int:
    from ..train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} epoch {result['epoch']}: top-1 error {result['top1_err']:.2f}%, "
              f"top-5 error {result['top5_err']:.2f}%")
    return 0


def cmd_models(args) -> int:
    from ..models import build_model, count_parameters, list_models

    for name in list_models():
        n = count_parameters(build_model(name, num_classes=args.num_classes, in_channels=args.in_channels))
        print(f"{name:16s} {n:>12,d} parameters")
    print("and timm:NAME for any timm architecture (pip install 'droppick[timm]'; "
          "python -c \"import timm; print(timm.list_models())\" lists them), e.g. --model timm:resnet10t")
    return 0


def _add_config_args(p: argparse.ArgumentParser) -> None:
    """The flags that make a TrainConfig (shared by train and compare)."""
    d = TrainConfig()
    p.add_argument("--recipe", dest="recipe_name", help="start from a named recipe (see 'droppick recipes')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (repeatable), e.g. --set epochs=2 --set reuse_at=[1]")
    g = p.add_argument_group("data")
    flag(g, "--dataset", f"{', '.join(DATASETS)}, or hf:PATH: a Hugging Face dataset saved with save_to_disk or "
                         "parquet files in the Hub's layout, or litdata:DIR or wds:DIR: chunked formats that "
                         f"`droppick convert` writes (default {d.dataset})", type=dataset_name)
    flag(g, "--data-dir", "dataset folder (default: standard locations)", dest="data_dir")
    flag(g, "--train-samples", "seeded class-stratified slice of the train split", type=int, dest="train_samples")
    flag(g, "--test-samples", "same for the test split", type=int, dest="test_samples")
    flag(g, "--val-samples", "hold out this many training samples (seeded, class-stratified) as a validation "
         "split, reported as val_top1 beside test_top1: tune on it, not on the test set", type=int, dest="val_samples")
    flag(g, "--per-class", "keep this many train samples per class (CIFAR10-5000: 500)", type=int, dest="per_class")
    flag(g, "--label-noise", "make this share of the training labels wrong, seeded (test split untouched; "
         "a --val-samples split is noisy too); the flipped indices go to RUN/label_noise.json", type=float,
         dest="label_noise")
    flag(g, "--noise-kind", "symmetric (another class at random) or pairs (each class's confusable partner)",
         choices=("symmetric", "pairs"), dest="noise_kind")
    flag(g, "--imbalance", "a seeded long tail of the train split: the largest class this many times the smallest "
         "(test split untouched; the summary reports balanced top-1 beside top-1)", type=float)
    flag(g, "--num-workers", f"DataLoader workers for imagefolder (default {d.num_workers})", type=int, dest="num_workers")
    flag(g, "--skip-unreadable", "imagefolder: leave training images that cannot be read out of every subset (listed "
          "in RUN/unreadable.jsonl, counted in summary.json) instead of stopping", action="store_const", const=True,
          dest="skip_unreadable")
    flag(g, "--decode", f"imagefolder: 'workers' decode with Pillow in the DataLoader workers; 'device' has the "
          "workers read bytes and decodes and augments on the training device, nvJPEG on a GPU "
          f"(default {d.decode})", choices=DECODE_MODES)
    g = p.add_argument_group("model and optimiser")
    flag(g, "--model", f"see 'droppick models' (default {d.model})")
    flag(g, "--lr", f"initial learning rate (default {d.lr})", type=float)
    flag(g, "--lr-schedule", f"default {d.lr_schedule}", choices=LR_SCHEDULES, dest="lr_schedule")
    flag(g, "--lr-milestones", "epochs after which the LR is divided by 10 (default: --reuse-at)",
          type=int_list, dest="lr_milestones")
    flag(g, "--batch-size", f"default {d.batch_size}", type=int, dest="batch_size")
    flag(g, "--momentum", f"default {d.momentum}", type=float)
    flag(g, "--weight-decay", f"default {d.weight_decay}", type=float, dest="weight_decay")
    flag(g, "--amp", f"mixed precision (default {d.amp})", choices=AMP_MODES)
    flag(g, "--channels-last", "NHWC memory format", action="store_const", const=True, dest="channels_last")
    flag(g, "--compile", "torch.compile the training forward (static shapes)", action="store_const", const=True)
    flag(g, "--compile-mode", f"torch.compile mode; reduce-overhead replays CUDA graphs (default {d.compile_mode})",
         choices=COMPILE_MODES, dest="compile_mode")
    flag(g, "--policy", f"default {d.policy}", choices=POLICIES)
    flag(g, "--score", f"what ranks the samples: the loss, EL2N or the margin, from the step's logits (default {d.score})",
         choices=SCORES)
    flag(g, "--target-compute", "the budget, a fraction of training on all data: dap, random, epsilon and ema take the "
         "budget rule's keep and floor for it (not with --keep or --min-keep); rs2, scaled, static, infobatch and "
         "seta match it", type=float, dest="target_compute")
    flag(g, "--epsilon", f"policy epsilon: share of a drop's kept samples drawn at random (default {d.epsilon})",
         type=float)
    flag(g, "--window-skip", f"policy window: share of a drop's subset, its highest losses, skipped (default "
         f"{d.window_skip})", type=float, dest="window_skip")
    flag(g, "--trusted-share", f"policy trusted: share of all samples, the highest mean losses, ranked last at drops "
         f"(default {d.trusted_share})", type=float, dest="trusted_share")
    flag(g, "--trusted-suspects", "policy trusted: 'share' (the top --trusted-share) or 'uniform' (every sample whose "
         f"mean score is worse than a uniform guess's; no share to tune) (default {d.trusted_suspects})",
         choices=TRUSTED_SUSPECTS, dest="trusted_suspects")
    flag(g, "--rho-epochs", f"policy rho: epochs its irreducible-loss model trains on the --val-samples split before "
         f"epoch 1 (default {d.rho_epochs})", type=int, dest="rho_epochs")
    flag(g, "--seta-ratio", f"policy seta: share left out at random each epoch (default {d.seta_ratio})", type=float,
         dest="seta_ratio")
    flag(g, "--seta-groups", f"policy seta: loss clusters (default {d.seta_groups})", type=int, dest="seta_groups")
    flag(g, "--seta-window", f"policy seta: share of the clusters in its window (default {d.seta_window})", type=float,
         dest="seta_window")
    flag(g, "--sb-keep", f"policy selective_backprop: share of each batch back-propagated (default {d.sb_keep})",
         type=float, dest="sb_keep")
    flag(g, "--sb-start", f"policy selective_backprop: first selecting epoch (default {d.sb_start})", type=int,
         dest="sb_start")
    flag(g, "--sb-end", "policy selective_backprop: last selecting epoch (default: the last)", type=int, dest="sb_end")
    flag(g, "--ema-beta", f"policy ema: weight of a sample's past loss average (default {d.ema_beta})", type=float,
         dest="ema_beta")
    flag(g, "--exclude-nonfinite", "leave samples with a NaN/inf loss out (logged to nonfinite.jsonl) instead of "
          "stopping; skip optimiser steps with non-finite gradients", action="store_const", const=True,
          dest="exclude_nonfinite")
    add_schedule_args(p)
    g = p.add_argument_group("run")
    flag(g, "--seed", f"default {d.seed}", type=int)
    flag(g, "--device", f"auto, cpu, cuda or cuda:N (default {d.device})")
    flag(g, "--profile", "print where each epoch's time goes", action="store_const", const=True)
    flag(g, "--shard-state", "each rank holds the DaP state of its own slice of the samples only, checkpointed as a file "
         "per rank; the same subsets as without it (not with rs2, infobatch, seta, rho)", action="store_const", const=True,
         dest="shard_state")
    flag(g, "--eval-every", f"evaluate after every K-th epoch and the last (default {d.eval_every})", type=int,
         dest="eval_every")
    flag(g, "--tensorboard", "write per-epoch scalars to RUN/tensorboard (pip install 'droppick[tensorboard]')",
         action="store_const", const=True)


def _config_from_args(args) -> TrainConfig:
    """Defaults < recipe < flags < --set; epoch-valued settings not given follow a changed --epochs.
    With --target-compute, a policy that follows DaP's schedule takes the budget rule's keep and floor
    for the training set's N (loaded once here to count it), and without --policy the rule's drops."""
    recipe = load_recipe(args.recipe_name).config if args.recipe_name else {}
    base = TrainConfig().to_dict() | recipe
    asked = given(args, TrainConfig.keys()) | parse_overrides(args.set)
    values, derived = follow_epochs(base, asked)
    if derived:
        print(describe_schedule(values, derived, base["epochs"]), file=sys.stderr)
    cfg = TrainConfig.from_dict(values)
    if "target_compute" not in asked or cfg.policy not in FOLLOWS_SCHEDULE:
        if "target_compute" in asked and cfg.policy == "full":
            raise ValueError("policy full trains on all data every epoch: remove --target-compute, or choose a policy "
                             "that spends a budget (dap, rs2, ...)")
        return cfg
    from ..report.compare import dataset_size

    refuse_budget_conflicts(asked)
    n = dataset_size(cfg)
    # the drops: compare's --policies, the user's or the recipe's policy, else the rule's
    yours = ("each of --policies" if hasattr(args, "policies") else
             f"policy {cfg.policy}" if "policy" in asked or "policy" in recipe else None)
    budgeted = cfg.with_budget(cfg.target_compute, n, fixed_warmup="warmup" in asked, fixed_policy=yours is not None)
    print(describe_budget(budgeted.schedule, n, cfg.target_compute, cfg.warmup, yours), file=sys.stderr)
    return budgeted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="droppick", description="Drop-and-Pick training: plan, train, evaluate.")
    parser.add_argument("--version", action="version", version=f"droppick {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    add_plan_parser(sub)

    t = sub.add_parser("train", help="train with a policy and write a run directory",
                       description="Unset options take the recipe's value, else the default shown.")
    _add_config_args(t)
    t.add_argument("--out", default=None, help="run directory (default runs/RECIPE-or-DATASET-MODEL-POLICY-seedS)")
    t.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR with its saved config")
    t.add_argument("--auto-resume", action="store_true",
                   help="one command line for the first start and every restart (a requeued job, torchrun "
                        "--max-restarts): a new or empty --out starts the run, an --out holding this run continues "
                        "it from its newest checkpoint, anything else is refused")
    t.add_argument("--stop-after", type=int, default=None, metavar="EPOCH",
                   help="stop once EPOCH is checkpointed (resume later with --resume)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("compare", help="train several policies at DaP's compute over seeds; write a report",
                       description="Finished runs are reused and interrupted ones resumed: rerun to continue.")
    _add_config_args(c)
    c.add_argument("--policies", default="full,dap,random,scaled,static,infobatch,rs2",
                   help="comma-separated policies (default %(default)s)")
    c.add_argument("--seeds", type=int, default=3, help="seeds per policy, starting at --seed (default %(default)s)")
    c.add_argument("--out", default=None, help="report folder (default runs/compare-RECIPE)")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_compare)

    from ..report.demo import DEMO_RECIPE

    d = sub.add_parser("demo", help="train all data and DaP with the same seed; table and picture of what DaP saved",
                       description=f"Unset options take the recipe's value (default recipe {DEMO_RECIPE}). "
                                   "Finished runs are reused and interrupted ones resumed.")
    _add_config_args(d)
    d.set_defaults(recipe_name=DEMO_RECIPE)
    d.add_argument("--out", default="runs/demo", help="output folder (default %(default)s)")
    d.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("inspect", help="picture grids of the samples kept longest / dropped first, per-class keep rates")
    i.add_argument("run", help="a run directory")
    i.add_argument("--out", default=None, help="output folder (default: the run directory)")
    i.add_argument("--count", type=int, default=32, help="images per grid (default %(default)s)")
    i.set_defaults(func=cmd_inspect)

    s = sub.add_parser("suspects", help="the training samples whose label is most likely wrong, from the run's losses")
    s.add_argument("run", help="a run directory")
    s.add_argument("--top", default="100", help="rows of suspects.csv: a number, or 'flagged' for every sample whose mean "
                   "score is worse than a uniform guess's (default %(default)s)")
    s.set_defaults(func=cmd_suspects)

    e = sub.add_parser("eval", help="evaluate a checkpoint on its run's test split (top-1/top-5 error)")
    e.add_argument("checkpoint")
    e.add_argument("--data-dir", default=None, help="override the dataset folder saved in the checkpoint")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("models", help="list the model names with their parameter counts")
    m.add_argument("--num-classes", type=int, default=10)
    m.add_argument("--in-channels", type=int, default=3)
    m.set_defaults(func=cmd_models)

    add_recipes_parser(sub)

    from .convert import add_parser as add_convert_parser
    from .transfer import add_parsers as add_transfer_parsers  # export, transfer, compare-transfer

    add_convert_parser(sub)
    add_transfer_parsers(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe raises here, inside this try, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader closed the pipe (`droppick recipes | head`): that is the reader's choice, not an
        # error. Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, FloatingPointError, ImportError, RankDisagreementError) as e:
        # OSError: a missing file, a directory in use, a full disk (RunWriteError); FloatingPointError:
        # NonFiniteLossError; ImportError: an optional extra that is not installed
        print(f"droppick {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
