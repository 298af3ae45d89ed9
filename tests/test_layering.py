"""The package's layers, read from every import in the source: the DaP core imports nothing from the
folders above it, data/ and models/ nothing from the trainer or above, and no two modules import each
other.

The reader sees each form an import can take: ``import x.y``, ``from x import y``, relative imports
resolved against the importing module's package, ``importlib.import_module`` and ``__import__`` with a
literal name, and a name a package's ``__init__`` re-exports (``from droppick import IndexedDataset``
is an import of droppick.data.in_memory). test_each_rule_catches_every_import_form feeds every rule a
synthetic module of each form, so a rule cannot pass because an import went unread.
"""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "droppick"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def absolute(name: str, level: int, package: str, module: str) -> str:
    """``name`` imported with ``level`` leading dots from a module of ``package``, as Python resolves it:
    one dot is the package itself, each further dot its parent."""
    if not level:
        return name
    parts = package.split(".") if package else []
    if level > len(parts):
        raise ValueError(f"{module}: the relative import {'.' * level}{name} goes above the top-level package")
    return ".".join(parts[: len(parts) - level + 1] + ([name] if name else []))


def literal(node: ast.expr | None):
    """A string, int or list/tuple-of-strings literal's value; None for anything computed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)) and all(isinstance(e, ast.Constant) for e in node.elts):
        return [e.value for e in node.elts]
    return None


def argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return next((k.value for k in call.keywords if k.arg == keyword), None)


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every name the module ``module`` (whose text is ``source``) imports, anywhere in it (inside
    functions and ``if TYPE_CHECKING:`` too), made absolute. ``import x.y`` gives x.y; ``from x import
    y`` gives x and x.y, which may be a module or a name defined in x; ``importlib.import_module(name,
    package)`` and ``__import__(name, globals, locals, fromlist, level)`` count when their arguments
    are literals (a computed name cannot be read, and the tree has none that import droppick)."""
    package = module if is_package else module.rpartition(".")[0]
    tree = ast.parse(source)
    # what `from importlib import import_module as load` binds, beside the plain names
    loaders = {"import_module", "__import__"} | {
        alias.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "importlib"
        for alias in node.names if alias.name == "import_module" and alias.asname}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node.module or "", node.level, package, module)
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names if alias.name != "*"}
        elif isinstance(node, ast.Call):
            called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            name = literal(argument(node, 0, "name"))
            if called not in loaders or not isinstance(name, str):
                continue
            if called == "__import__":
                level, fromlist = literal(argument(node, 4, "level")) or 0, literal(argument(node, 3, "fromlist")) or []
                base = absolute(name, level, package, module)
                found |= {base} | {f"{base}.{item}" for item in fromlist}
            else:
                level = len(name) - len(name.lstrip("."))
                anchor = argument(node, 1, "package")
                if level and isinstance(literal(anchor), str):
                    anchor_package = literal(anchor)
                elif level and isinstance(anchor, ast.Name) and anchor.id in ("__package__", "__name__"):
                    anchor_package = package if anchor.id == "__package__" else module
                elif level:
                    raise ValueError(f"{module}: import_module({name!r}, ...) is relative to a package this reader cannot see; "
                                     "pass the package as a literal or __package__")
                else:
                    anchor_package = ""
                found.add(absolute(name[level:], level, anchor_package, module))
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def reexports(package: str) -> dict[str, str]:
    """The names a package's ``__init__`` binds with ``from X import name [as bound]`` at its top
    level: bound -> X.name."""
    init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py")
    if not init.is_file():
        return {}
    bound = {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = absolute(node.module or "", node.level, package, package)
            bound |= {alias.asname or alias.name: f"{base}.{alias.name}" for alias in node.names}
    return bound


def through_reexports(names: set[str]) -> set[str]:
    """``names`` and, for each package.name that package's ``__init__`` re-exports, where it comes from."""
    found, todo = set(names), list(names)
    while todo:
        package, _, attr = todo.pop().rpartition(".")
        origin = reexports(package).get(attr) if package else None
        if origin and origin not in found:
            found.add(origin)
            todo.append(origin)
    return found


def droppick_imports(path: Path) -> set[str]:
    """The droppick names the module at ``path`` imports, re-exports followed to where they are defined."""
    names = imported_names(path.read_text(), module_name(path), path.name == "__init__.py")
    return {name for name in through_reexports(names) if name.split(".")[0] == "droppick"}


# -- the rules ----------------------------------------------------------------------------------------

ABOVE_THE_MODELS = ("train", "cli", "report", "transfer", "integrations")
CORE = {f"droppick.{m}" for m in ("schedule", "plan", "selection", "engine", "sampler", "seeding", "distributed", "budget",
                                  "suspects", "atomic", "version", "policies", "records", "sharded", "sharded_engine",
                                  "sharded_rules", "sharded_state")}


@dataclass(frozen=True)
class Rule:
    layer: str
    members: tuple[str, ...]  # modules, or packages whose modules all belong
    forbidden: tuple[str, ...]  # droppick's sub-packages the layer must not import from
    remedy: str

    def governs(self, module: str) -> bool:
        return any(module == m or module.startswith(m + ".") for m in self.members)

    def breaches(self, names: set[str]) -> list[str]:
        return sorted(n for n in through_reexports(names) if n.split(".")[0] == "droppick" and n.count(".")
                      and n.split(".")[1] in self.forbidden)


RULES = (
    Rule("the DaP core", tuple(sorted(CORE)), ("data", "models") + ABOVE_THE_MODELS,
         "the core stands below everything; take what it needs as arguments"),
    Rule("data", ("droppick.data",), ABOVE_THE_MODELS, "data stands below the trainer; pass plain arguments instead"),
    Rule("models", ("droppick.models",), ABOVE_THE_MODELS, "models stand below the trainer; pass plain arguments instead"),
)


def test_the_relative_import_resolver_reads_this_package_correctly():
    # guards the rules below against passing because imports were misread
    assert "droppick.data.in_memory" in droppick_imports(PACKAGE / "data" / "pipeline.py")
    assert "droppick.seeding.derive_seed" in droppick_imports(PACKAGE / "data" / "pipeline.py")
    assert "droppick.data.pipeline.load_splits" in droppick_imports(PACKAGE / "train" / "splits.py")
    assert "droppick.train.config.TrainConfig" in droppick_imports(PACKAGE / "train" / "checkpoint.py")


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.layer)
def test_every_module_keeps_its_layer(rule):
    governed = {name: path for name, path in all_modules().items() if rule.governs(name)}
    assert len(governed) >= 4, f"the rule for {rule.layer} governs {sorted(governed)}: a member was renamed?"
    for name, path in governed.items():
        bad = rule.breaches(imported_names(path.read_text(), name, path.name == "__init__.py"))
        assert not bad, f"{name} imports {bad}: {rule.remedy}"


def test_no_two_modules_import_each_other():
    modules = all_modules()
    imports = {name: {m for m in droppick_imports(path) if m in modules and m != name}
               for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules is not a circle between two layers
    circles = sorted((a, b) for a in imports for b in imports[a]
                     if a < b and a in imports[b] and not b.startswith(a + ".") and not a.startswith(b + "."))
    assert not circles, f"modules importing each other: {circles}"


# -- each rule against synthetic modules of every import form ----------------------------------------

# A module of each rule's layer, and a module none of the three layers may import (the trainer's config).
SAMPLES = {"the DaP core": "droppick.engine", "data": "droppick.data.pipeline", "models": "droppick.models.cifar"}
TARGET = "droppick.train.config"  # forbidden to all three layers

FORMS = {  # {abs}: droppick.train.config; {rel}: the same relative to the sample's package; {up}: dots to droppick
    "import x.y": "import {abs}\n",
    "import x.y as z": "import {abs} as settings\n",
    "from x import y": "from droppick.train import config\n",
    "from x.y import name": "from {abs} import TrainConfig\n",
    "from ..x import y": "from {rel_package} import config\n",
    "from ..x.y import name": "from {rel} import TrainConfig\n",
    "from . import x": "from {up} import train\n",
    "inside a function": "def load():\n    from {rel} import TrainConfig\n    return TrainConfig\n",
    "if TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import {abs}\n",
    "importlib.import_module": "import importlib\nimportlib.import_module('{abs}')\n",
    "import_module under another name": "from importlib import import_module as load\nload('{abs}')\n",
    "import_module(name, package)": "import importlib\nimportlib.import_module('.config', 'droppick.train')\n",
    "import_module(name, __package__)": "import importlib\nimportlib.import_module('{rel}', __package__)\n",
    "__import__": "__import__('{abs}')\n",
    "__import__ with fromlist": "__import__('droppick.train', fromlist=['config'])\n",
    "__import__ with a level": "__import__('train', globals(), locals(), ['config'], {level})\n",
}
ALLOWED = {
    "the DaP core": "import torch\nfrom .schedule import DaPSchedule\nfrom . import seeding\nimport importlib\n"
                    "importlib.import_module('droppick.selection')\n__import__('droppick.policies', fromlist=['base'])\n",
    "data": "import torchvision\nfrom ..seeding import derive_seed\nfrom . import transforms\n"
            "from .in_memory import IndexedDataset\nfrom droppick import DaPSchedule\n",
    "models": "from torch import nn\nfrom .. import seeding\nfrom . import small\n"
              "importlib.import_module('.small', __package__)\n",
}


def sample_module(rule: Rule, form: str) -> tuple[str, str]:
    module = SAMPLES[rule.layer]
    depth = module.count(".")  # droppick.engine: 1 (package droppick), droppick.data.pipeline: 2
    up = "." * depth
    text = FORMS[form].format(abs=TARGET, rel_package=up + "train", rel=up + "train.config", up=up, level=depth)
    return module, text


def test_the_samples_belong_to_their_rules():
    assert {rule.layer for rule in RULES} == set(SAMPLES) == set(ALLOWED)
    for rule in RULES:
        assert rule.governs(SAMPLES[rule.layer]) and "train" in rule.forbidden


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.layer)
def test_each_rule_catches_every_import_form(rule, form):
    module, text = sample_module(rule, form)
    bad = rule.breaches(imported_names(text, module, is_package=False))
    assert bad and all(name.startswith("droppick.train") for name in bad), (form, text, bad)


def test_a_re_exported_name_is_caught_where_it_is_defined():
    # droppick/__init__.py re-exports IndexedDataset from data/: the core may not take it from there either
    [core] = [rule for rule in RULES if rule.layer == "the DaP core"]
    assert core.breaches(imported_names("from droppick import IndexedDataset\n", "droppick.engine", False)) == [
        "droppick.data.in_memory.IndexedDataset"]
    assert core.breaches(imported_names("from .. import IndexedDataset\n", "droppick.policies.dap", False)) == [
        "droppick.data.in_memory.IndexedDataset"]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.layer)
def test_an_allowed_import_is_not_flagged(rule):
    names = imported_names(ALLOWED[rule.layer], SAMPLES[rule.layer], is_package=False)
    assert len({n for n in names if n.startswith("droppick.")}) >= 3  # read, and found allowed
    assert rule.breaches(names) == []


def test_relative_imports_resolve_against_the_package_of_a_module_or_of_an_init():
    assert imported_names("from . import in_memory\n", "droppick.data.pipeline", False) >= {"droppick.data.in_memory"}
    assert imported_names("from . import in_memory\n", "droppick.data", True) >= {"droppick.data.in_memory"}
    assert imported_names("from .. import train\n", "droppick.data", True) >= {"droppick.train"}
    assert imported_names("from .. import train\n", "droppick.data.pipeline", False) >= {"droppick.train"}
    assert "droppick.data.train" not in imported_names("from .. import train\n", "droppick.data.pipeline", False)
    assert imported_names("import importlib\nimportlib.import_module('..train', __package__)\n",
                          "droppick.data.pipeline", False) >= {"droppick.train"}
    with pytest.raises(ValueError, match="goes above the top-level package"):
        imported_names("from ... import train\n", "droppick.data.pipeline", False)
    with pytest.raises(ValueError, match="relative to a package this reader cannot see"):
        imported_names("import importlib\nimportlib.import_module('.config', anchor)\n", "droppick.engine", False)
