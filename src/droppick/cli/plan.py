"""The commands that plan without training: ``plan`` (a schedule's subset sizes and compute) and
``recipes`` (each recipe's planned compute). ``main.py`` adds them with ``add_plan_parser(subparsers)``
and ``add_recipes_parser(subparsers)``, each where it stands in ``droppick --help``."""

from __future__ import annotations

import json
import sys

from ..budget import SOLVABLE, BudgetRule, budget_rule, describe_budget, solve
from ..policies import build_policy
from ..schedule import DaPSchedule
from ..train.epochs import describe_schedule, follow_epochs, no_drop_warning
from ..train.recipes import list_recipes, load_recipe
from .args import SCHEDULE_KEYS, add_schedule_args, flag, given, refuse_budget_conflicts

PAPER_BASELINE = dict(epochs=300, warmup=40, interval=10, keep=0.9, active=None, reuse_at=[150])  # Table 2


def budget_choice(values: dict, num_samples: int, compute: float, asked: dict) -> BudgetRule:
    """The budget rule for the other schedule values, and the line that says why (stderr). A warm-up
    given on the command line (in ``asked``) is kept; a default or a recipe's may be shortened."""
    rule = budget_rule(compute, num_samples, values["epochs"], values["warmup"], values["interval"],
                       values["reuse_at"], values.get("active"), fixed_warmup="warmup" in asked)
    print(describe_budget(rule.schedule, num_samples, compute, values["warmup"]), file=sys.stderr)
    return rule


def _schedule_values(config: dict) -> dict:
    """The schedule's keys a config (a recipe's) sets; a key it leaves out takes DaPSchedule's default."""
    return {k: config[k] for k in SCHEDULE_KEYS if k in config}


def _policy_plan(config: dict, schedule: DaPSchedule, num_samples: int):
    """The plan of a recipe's policy (the paper's DaP without a recipe)."""
    policy = build_policy(config.get("policy", "dap"), target_compute=config.get("target_compute"))
    return policy.plan(schedule, num_samples)


def cmd_plan(args) -> int:
    recipe = load_recipe(args.recipe_name) if args.recipe_name else None
    base = _schedule_values(recipe.config) if recipe else PAPER_BASELINE
    values, derived = follow_epochs(base, given(args, SCHEDULE_KEYS))
    if derived:
        print(describe_schedule(values, derived, base["epochs"]), file=sys.stderr)
    num_samples = getattr(args, "num_samples", recipe.num_samples if recipe else 50000)
    rule = None
    if args.solve and args.target_compute is None:
        raise ValueError("--solve needs --target-compute, e.g. --target-compute 0.63 --solve keep")
    if args.solve:
        schedule, _ = solve(DaPSchedule(**values), num_samples, args.target_compute, args.solve)
        print(f"solved {args.solve} = {getattr(schedule, args.solve)} for target compute {args.target_compute}",
              file=sys.stderr)
    elif args.target_compute is not None:  # the budget rule chooses keep and the floor
        asked = given(args, SCHEDULE_KEYS)
        refuse_budget_conflicts(asked)
        rule = budget_choice(values, num_samples, args.target_compute, asked)
        schedule = rule.schedule
    else:
        schedule = DaPSchedule(**values)
    config = recipe.config if recipe else {}
    plan = _policy_plan(config, schedule, num_samples)
    # on stderr, like the derived-schedule note, so that --json output stays one object
    warning = no_drop_warning(schedule, num_samples, config.get("policy", "dap"), config.get("target_compute"))
    if args.plot:
        from ..report.plot import plot_plan

        plot_plan(plan, args.plot, title=recipe.name if recipe else "")
    if args.json:
        out = plan.to_dict()
        if recipe:
            out.update(recipe=recipe.name, paper=recipe.paper, paper_compute=recipe.paper_compute)
        out.update(schedule=schedule.to_dict())
        if args.solve:
            out.update(solved=args.solve)
        if rule:  # the rule's drops: what droppick train --target-compute trains without --policy
            out.update(rule.policy_args)
        print(json.dumps(out))
        if warning:
            print(warning, file=sys.stderr)
        return 0
    print(f"{'epoch':>6} {'subset':>10}  event")
    for epoch, (size, event) in enumerate(zip(plan.subset_sizes, plan.events), start=1):
        print(f"{epoch:>6} {size:>10}  {event or ''}")
    print(f"compute: {plan.total_samples} of {plan.epochs} x {plan.num_samples} samples = "
          f"{100 * plan.compute_fraction:.2f}% (compute_fraction {plan.compute_fraction:.4f})")
    if recipe and recipe.paper_compute is not None:
        print(f"paper: {100 * recipe.paper_compute:.0f}% ({recipe.paper})")
    if args.plot:
        print(f"plot written to {args.plot}")
    if warning:
        sys.stdout.flush()  # after the table it explains, also when both go to one terminal
        print(warning, file=sys.stderr)
    return 0


def cmd_recipes(args) -> int:
    for r in list_recipes():
        plan = _policy_plan(r.config, DaPSchedule(**_schedule_values(r.config)), r.num_samples)
        paper = f"{100 * r.paper_compute:.0f}%" if r.paper_compute is not None else "-"
        print(f"{r.name:34s} compute {100 * plan.compute_fraction:5.1f}% (paper {paper:>4s})  {r.paper}")
    return 0


def add_plan_parser(sub) -> None:
    p = sub.add_parser("plan", help="subset size of every epoch and the compute fraction, without training",
                       description="Without --recipe the defaults are the paper's CIFAR-10 baseline (Table 2): "
                                   "E=300, W=40, I=10, p=0.9, R=150, N=50000.")
    p.add_argument("--recipe", dest="recipe_name", help="plan a named recipe (see 'droppick recipes'); flags override it")
    add_schedule_args(p)
    flag(p, "--num-samples", "N, training samples (default 50000, or the recipe's dataset size)", type=int)
    p.add_argument("--target-compute", type=float, default=None, metavar="FRACTION",
                   help="alone: the budget rule's schedule for this compute (DaP: warm-up, keep and min_keep "
                        "chosen; not with --keep or --min-keep); with --solve: the value of one hyper-parameter "
                        "that lands closest to it, the others as given")
    p.add_argument("--solve", choices=SOLVABLE, default=None, help="the hyper-parameter --target-compute changes")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", metavar="FILE.png", help="draw subset size against epoch")
    p.set_defaults(func=cmd_plan)


def add_recipes_parser(sub) -> None:
    r = sub.add_parser("recipes", help="list the paper's recipes with their planned compute")
    r.set_defaults(func=cmd_recipes)
