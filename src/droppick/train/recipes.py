"""Named training recipes: the paper's settings as data files under ``droppick/recipes/``.

One JSON file per table-row family (dataset x architecture) holds a ``base`` configuration and
``variants`` (full, dapNN, ...) that override a few keys. A recipe's name is
``<file stem>-<variant>``, e.g. ``cifar10-resnet110-dap63``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

RECIPE_DIR = Path(__file__).parent / "recipes"


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    paper: str  # which row of which table this reproduces
    paper_compute: Optional[float]  # the paper's computation figure for that row, 0..1
    num_samples: int  # training-set size the paper used (for planning without the data)
    hyperparameters_from: str
    config: dict  # TrainConfig keys


def _families() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(RECIPE_DIR.glob("*.json"))}


def list_recipes() -> list[Recipe]:
    return [_make(stem, variant, family) for stem, family in _families().items() for variant in family["variants"]]


def load_recipe(name: str) -> Recipe:
    families = _families()
    for stem, family in families.items():
        prefix = stem + "-"
        if name.startswith(prefix) and name[len(prefix):] in family["variants"]:
            return _make(stem, name[len(prefix):], family)
    names = ", ".join(r.name for r in list_recipes())
    raise ValueError(f"unknown recipe {name!r}; available recipes: {names}")


def _make(stem: str, variant: str, family: dict) -> Recipe:
    v = family["variants"][variant]
    return Recipe(
        name=f"{stem}-{variant}",
        description=family["description"],
        paper=v.get("paper", ""),
        paper_compute=v.get("paper_compute"),
        num_samples=family["num_samples"],
        hyperparameters_from=family.get("hyperparameters_from", ""),
        config={**family["base"], **v["set"], "recipe": f"{stem}-{variant}"},
    )


def parse_overrides(pairs: Iterable[str]) -> dict:
    """``["epochs=2", "reuse_at=[1]", "data_dir=/d"]`` -> dict; values are JSON when they parse as JSON."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out
