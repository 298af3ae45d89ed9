"""The package's layers, read from the source's import statements (as the core's rule in
test_library_api.py): the data package stands below the trainer, and no two modules import
each other."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "droppick"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def droppick_imports(path: Path) -> set[str]:
    """The droppick modules ``path`` imports anywhere in it (inside functions too), relative
    imports resolved; ``from X import name`` counts as X.name, which may be a module or not."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            found |= {".".join(module + [alias.name]) for alias in node.names}
            found.add(".".join(module))
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] == "droppick"}


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_relative_import_resolver_reads_this_package_correctly():
    # guards the two rules below against passing because imports were misread
    assert "droppick.data.in_memory" in droppick_imports(PACKAGE / "data" / "pipeline.py")
    assert "droppick.seeding.derive_seed" in droppick_imports(PACKAGE / "data" / "pipeline.py")
    assert "droppick.data.pipeline.load_splits" in droppick_imports(PACKAGE / "train" / "splits.py")
    assert "droppick.train.config.TrainConfig" in droppick_imports(PACKAGE / "train" / "checkpoint.py")


def test_the_data_package_imports_nothing_from_the_trainer_or_above_it():
    above = ("train", "cli", "report", "transfer", "integrations")
    for name, path in all_modules().items():
        if name.startswith("droppick.data"):
            bad = sorted(m for m in droppick_imports(path) if m.split(".")[1] in above)
            assert not bad, f"{name} imports {bad}: data stands below the trainer; pass plain arguments instead"


def test_no_two_modules_import_each_other():
    modules = all_modules()
    imports = {name: {m for m in droppick_imports(path) if m in modules and m != name}
               for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules is not a circle between two layers
    circles = sorted((a, b) for a in imports for b in imports[a]
                     if a < b and a in imports[b] and not b.startswith(a + ".") and not a.startswith(b + "."))
    assert not circles, f"modules importing each other: {circles}"
