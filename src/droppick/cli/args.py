"""Argument types and helpers shared by the command groups (no command imports another)."""

from __future__ import annotations

import argparse
from typing import Optional


def int_list(text: str) -> list[int]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 150,225; got {text!r}") from None


def optional_int(text: str) -> Optional[int]:
    if text.strip().lower() in ("none", "inf"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none'; got {text!r}") from None


def flag(group, name: str, help: str, **kw) -> None:
    group.add_argument(name, default=argparse.SUPPRESS, help=help, **kw)


def given(args, keys) -> dict:
    return {k: getattr(args, k) for k in keys if hasattr(args, k)}


def dataset_name(text: str) -> str:
    """--dataset: a known name, or hf:PATH, litdata:DIR or wds:DIR."""
    from ..train.config import DATASETS

    prefix, colon, path = text.partition(":")
    if text in DATASETS or (colon and prefix in ("hf", "litdata", "wds") and path):
        return text
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATASETS)}, hf:PATH, litdata:DIR or wds:DIR; "
                                     f"got {text!r}")


SCHEDULE_KEYS = ("epochs", "warmup", "interval", "keep", "active", "reuse_at", "min_keep")


def add_schedule_args(p: argparse.ArgumentParser) -> None:
    """The schedule's flags, shared by ``plan`` and the flags that make a TrainConfig."""
    g = p.add_argument_group("Drop-and-Pick schedule (the paper's Table 1)")
    flag(g, "--epochs", "E, total epochs", type=int)
    flag(g, "--warmup", "W, epochs on all data before the first drop", type=int)
    flag(g, "--interval", "I, epochs between drops", type=int)
    flag(g, "--keep", "p, fraction of the current subset kept at a drop", type=float)
    flag(g, "--active", "alpha, epochs of a cycle that drop; 'none' = no limit", type=optional_int)
    flag(g, "--reuse-at", "R, comma-separated epochs after which all data is picked up ('none' for none)",
          type=int_list, dest="reuse_at")
    flag(g, "--min-keep", "f, beyond the paper: a drop never leaves fewer than ceil(f x N) samples (default 0, "
         "no floor)", type=float, dest="min_keep")


def refuse_budget_conflicts(asked: dict) -> None:
    """The budget rule chooses keep and the floor itself: a value given beside it is refused, not overridden."""
    both = [f"--{key.replace('_', '-')}" for key in ("keep", "min_keep") if key in asked]
    if both:
        raise ValueError(f"--target-compute chooses keep and min_keep itself (the budget rule); remove {' and '.join(both)}, "
                         "or remove --target-compute to set them yourself (the paper's rule: --policy dap --keep P)")
