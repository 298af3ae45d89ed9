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
