"""The command line the training experiments share: ``--part`` (repeatable), ``--share I/K`` and
``--report``, and the loop that trains the runs a part lists, one process's share of them."""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import log
from droppick.report.compare import run_all
from droppick.train.lock import RunLockError

Jobs = list[tuple[dict, Path]]  # (run name -> TrainConfig, the folder its runs go to)


def arguments(doc: str, parts: list[str], part_help: str = "train this part (repeatable)") -> argparse.Namespace:
    """The script's arguments; ``part`` defaults to the first of ``parts``, ``share`` is (index, of)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--report", action="store_true", help="only rewrite the page from the runs that exist")
    p.add_argument("--part", choices=parts, action="append", help=part_help)
    p.add_argument("--share", default="0/1", metavar="I/K",
                   help="train only every K-th run from the I-th, so K processes can train side by side")
    args = p.parse_args()
    args.part = args.part or parts[:1]
    index, of = (int(x) for x in args.share.split("/"))
    if not 0 <= index < of:
        p.error(f"--share I/K needs 0 <= I < K; got {args.share}")
    args.share = (index, of)
    return args


def share(items: list, index: int, of: int) -> list:
    """Every ``of``-th item from ``index``: disjoint shares for processes that train side by side."""
    return items[index::of]


def train(jobs: Jobs, index: int = 0, of: int = 1) -> None:
    """Train every unfinished run of ``jobs`` in this process's share (a finished run is reused). A run
    another live process holds is left to it: shares computed at different times can overlap."""
    runs = [({name: cfg}, folder) for configs, folder in jobs for name, cfg in configs.items()]
    for configs, folder in share(runs, index, of):
        try:
            run_all(configs, folder, log=log)
        except RunLockError as held:
            log(f"left to the process that holds it: {held}")
