"""The package as users get it: its metadata says what CI tests, its version is written in one place,
and the wheel that `make dist` builds works installed into a fresh venv, away from this repository.

The wheel test (marked slow, about 30 s) builds the sdist and, from it, the wheel as `make dist` does,
installs the wheel into a new venv that borrows this venv's packages (torch included, so nothing is
downloaded) but not its editable droppick, and runs the console script, a recipe's plan, a tiny
training run and the README's library example there, from a folder outside the repository.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import droppick
from droppick.cli.main import main
from test_library_api import readme_block, user_namespace

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
VERSION = PROJECT["version"]


# -- metadata: what is declared is what CI runs -----------------------------------------------------

def pinned(package: str) -> str:
    """The version requirements/torch.txt pins ``package`` to: what CI installs."""
    [pin] = re.findall(rf"^{package}==(\S+)$", (ROOT / "requirements" / "torch.txt").read_text(), flags=re.M)
    return pin


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def test_the_declared_floors_are_the_versions_ci_tests():
    # CI's Python is its machine's python3 (3.11), recorded nowhere but the docs: the floor, the one
    # Python classifier and the Development page must name the same version, and this run satisfy it
    [tested_python] = re.fullmatch(r">=(3\.\d+)", PROJECT["requires-python"]).groups()
    listed = [c.rsplit(" ", 1)[1] for c in PROJECT["classifiers"] if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert listed == [tested_python], f"Python versions {listed} are declared; CI tests {tested_python} only"
    assert sys.version_info[:2] >= tuple(map(int, tested_python.split(".")))
    for package in ("torch", "torchvision"):
        floor = major_minor(pinned(package))
        assert f"{package}>={floor}" in PROJECT["dependencies"], f"{package}'s floor should be {floor}, the version CI runs"
    development = (ROOT / "docs" / "guide" / "development.md").read_text()
    for tested in (f"Python {tested_python}", f"torch {pinned('torch')}", f"torchvision {pinned('torchvision')}"):
        assert tested in development, f"docs/guide/development.md should state the tested version: {tested}"


def test_the_licence_is_apache_2_and_named_in_the_metadata():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
    assert not [c for c in PROJECT["classifiers"] if c.startswith("License ::")]  # setuptools refuses both forms
    assert any(req.startswith("setuptools>=77") for req in PYPROJECT["build-system"]["requires"])  # SPDX licence field


def test_the_project_urls_are_placeholders_the_docs_explain():
    urls = PROJECT["urls"]
    assert set(urls) == {"Documentation", "Source", "Changelog"}
    assert all(url.startswith("https://droppick.invalid/") for url in urls.values())  # never resolves
    assert "droppick.invalid" in (ROOT / "docs" / "guide" / "development.md").read_text()


def test_the_citation_file_cites_the_paper_and_the_software():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["license"] == PROJECT["license"]
    assert "version" not in cff, "the version lives in pyproject.toml alone"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Revisiting Pre-training: An Efficient Training Method for Image Classification"
    assert [a["family-names"] for a in paper["authors"]] == ["Cheng", "Wei", "Shi", "Chang", "Xiong", "Huang"]
    assert paper["year"] == 2018 and "arxiv.org" in paper["url"]


# -- the version: written once, read from the metadata ----------------------------------------------

def test_the_version_is_written_in_pyproject_only():
    assert droppick.__version__ == VERSION, "the installed metadata is older than pyproject.toml: make install-test reinstalls"
    literal = re.compile(r"""__version__\s*=\s*["']|version\s*=\s*["']\d""")
    written = [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*.py") if literal.search(p.read_text())]
    assert not written, f"a version written in the source besides pyproject.toml: {written}"


def test_droppick_version_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"droppick {VERSION}\n"


def test_the_changelog_has_a_section_for_this_version_under_unreleased():
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert headings[0] == ("Unreleased", "")
    released = [version for version, date in headings[1:] if date]
    assert len(released) == len(headings) - 1, "every released section has a date"
    assert released[0] == VERSION, f"the newest release in CHANGELOG.md is {released[0]}; pyproject.toml says {VERSION}"
    assert released[-1] == "0.1.0"


# -- the wheel, installed away from the repository ---------------------------------------------------

def run(command: list[str], cwd: Path, timeout: int = 180) -> str:
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, f"{command} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist and the wheel built from it, as `make dist` builds them, and twine's check."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)], cwd=ROOT)
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(out.iterdir()))], cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed. A .pth line puts this venv's site-packages on its path
    for torch and the rest; Python does not process the .pth files inside a directory named that way,
    so the editable droppick (__editable__...pth, pointing at src/) stays out."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", str(venv)], cwd=venv)
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "borrowed-from-the-repository-venv.pth").write_text("".join(f"{path}\n" for path in sorted(ours)))
    [wheel] = dist.glob("droppick-*.whl")
    run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-deps", "--no-index", str(wheel)], cwd=venv)
    return venv


@pytest.mark.slow
def test_the_sdist_holds_what_a_build_needs_and_the_wheel_what_users_need(dist):
    [sdist] = dist.glob(f"droppick-{VERSION}.tar.gz")
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "CITATION.cff",
            "src/droppick/__init__.py", "src/droppick/py.typed", "src/droppick/train/recipes/cifar10-resnet110.json"} <= in_sdist
    [wheel] = dist.glob(f"droppick-{VERSION}-py3-none-any.whl")  # built from the sdist by `python -m build`
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    recipes = {p.name for p in (ROOT / "src" / "droppick" / "train" / "recipes").glob("*.json")}
    assert {f"droppick/train/recipes/{name}" for name in recipes} <= in_wheel and len(recipes) >= 10
    assert {"droppick/py.typed", "droppick/cli/main.py", f"droppick-{VERSION}.dist-info/licenses/LICENSE"} <= in_wheel
    assert {name.split("/")[0] for name in in_wheel} == {"droppick", f"droppick-{VERSION}.dist-info"}  # no tests, bench, ...
    metadata = zipfile.ZipFile(wheel).read(f"droppick-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Python: >=3.11" in metadata


@pytest.mark.slow
def test_the_installed_wheel_runs_away_from_the_repository(venv, fake_fashion, tmp_path):
    bin_dir = venv / "bin"
    where = run([str(bin_dir / "python"), "-c", "import importlib.metadata as m, droppick; print(droppick.__file__); "
                 "print(m.distribution('droppick').locate_file('droppick/__init__.py'))"], cwd=tmp_path).split()
    assert all(Path(path).is_relative_to(venv) for path in where), f"droppick and its metadata come from {where}, not {venv}"

    assert run([str(bin_dir / "droppick"), "--version"], cwd=tmp_path) == f"droppick {VERSION}\n"
    plan = run([str(bin_dir / "droppick"), "plan", "--recipe", "cifar10-resnet110-dap63", "--json"], cwd=tmp_path)
    assert json.loads(plan)["compute_fraction"] == pytest.approx(0.6267, abs=1e-4)  # the recipe came from package data

    run([str(bin_dir / "droppick"), "train", "--data-dir", str(fake_fashion), "--epochs", "3", "--warmup", "1",
         "--interval", "1", "--keep", "0.5", "--reuse-at", "none", "--batch-size", "64", "--out", "run",
         "--no-progress", "--device", "cpu"], cwd=tmp_path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["samples_seen"] == 240 + 240 + 120  # the warm-up, then a drop to half (as in test_cli)
    assert summary["code"]["droppick"] == VERSION and summary["code"]["git_commit"] is None  # not a checkout


@pytest.mark.slow
def test_the_readme_library_example_runs_against_the_installed_wheel(venv, tmp_path):
    """The README's block in the namespace test_library_api gives it (user_namespace, its source
    copied into the script), under the fresh venv's interpreter."""
    script = tmp_path / "example.py"
    script.write_text("\n".join([
        "import torch", "import torch.nn.functional as F", "from torch.utils.data import DataLoader, TensorDataset", "",
        inspect.getsource(user_namespace),
        "ns = user_namespace()",
        f"exec({readme_block('for indices, images, targets in loader')!r}, ns)",
        "dap = ns['dap']",
        "assert dap.done and dap.samples_per_epoch == list(dap.plan().subset_sizes) and dap.compute_fraction < 1.0",
        "import droppick; print(droppick.__file__)",
    ]))
    [module] = run([str(venv / "bin" / "python"), str(script)], cwd=tmp_path).split()
    assert Path(module).is_relative_to(venv)
