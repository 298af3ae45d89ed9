"""Pieces the experiment scripts share: a timestamped log, the machine line, the "Setting"
paragraph of a script's docstring, the body of a generated markdown page to embed, and the
seed-noise line their findings draw."""

from __future__ import annotations

import collections
import datetime
import json
import math
import platform
from pathlib import Path

import torch


def log(msg: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {msg}", flush=True)


def utc_now() -> str:
    return f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"


def machine() -> str:
    """Where the runs train: the GPU when there is one, else the CPU and its torch threads."""
    if torch.cuda.is_available():
        where = torch.cuda.get_device_name()
    else:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor() or "unknown CPU")
        where = f"{cpu}, {torch.get_num_threads()} threads"
    return f"{where}, torch {torch.__version__}, Python {platform.python_version()}"


def setting(doc: str) -> str:
    """The docstring paragraph that starts with "Setting: ", on one line."""
    return "Setting: " + doc.split("Setting: ", 1)[1].split("\n\n", 1)[0].strip().replace("\n", " ")


def page_body(path: Path, link_prefix: str = "") -> list[str]:
    """The lines of a generated markdown page after its title, its image links made relative to
    the page that embeds it by ``link_prefix``."""
    return path.read_text().split("\n", 2)[2].replace("](", f"]({link_prefix}").strip("\n").splitlines()


def training_commits(runs: list[Path]) -> str:
    """Which commits trained ``runs`` (run directories), counted from their summary.json: runs are
    reused across sessions, so the commit that writes a report trained few of them, if any."""
    commits = collections.Counter(json.loads((run / "summary.json").read_text()).get("code", {}).get("git_commit")
                                  for run in sorted(set(runs)))
    known = [f"{commit} ({n})" for commit, n in sorted(commits.items(), key=str) if commit is not None]
    older = commits.get(None, 0)
    return (f"The {sum(commits.values())} runs were trained at commits {', '.join(known) or 'none recorded'}"
            + (f"; {older} trained before summaries recorded the commit (`git log` of their folders says when)"
               if older else "") + ".")


def standard_error(*rows: dict) -> float:
    """Standard error of a sum or difference of the rows' seed means (independent seeds)."""
    return math.sqrt(sum(r["top1_std"] ** 2 / r["seeds"] for r in rows))


def beyond_noise(difference: float, se: float) -> bool:
    # Two standard errors: with 2-3 seeds a rough line, stated as such rather than as a test.
    return abs(difference) > 2 * se


def noise_word(difference: float, se: float) -> str:
    """"beyond" or "within", for the findings' sentences about two standard errors."""
    return "beyond" if beyond_noise(difference, se) else "within"
