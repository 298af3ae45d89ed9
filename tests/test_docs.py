"""The documentation site (mkdocs.yml, docs/): `make docs`'s strict build, and the README's links into it.

The build is mkdocs' own ``--strict``: a broken link or anchor between pages, a missing README snippet,
an API-reference object that does not exist or a docstring mkdocstrings warns about fails it. It
takes a few seconds (mkdocstrings reads the source statically; nothing is imported).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_in_strict_mode_with_the_reference_and_the_reports(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-5000:]
    engine = (site / "reference" / "engine" / "index.html").read_text()
    assert 'id="droppick.engine.DropAndPick.end_epoch"' in engine  # generated from the docstrings
    policies = (site / "reference" / "policies" / "index.html").read_text()
    for name in ("Policy", "Scheduled", "KeepHardest", "KeepRandom", "EpsilonGreedy", "KeepHardestAverage",
                 "Full", "Scaled", "Static", "InfoBatch", "RS2"):
        assert re.search(rf'id="droppick\.policies\.\w+\.{name}"', policies), name
    report = site / "reports" / "experiments" / "fashion-mnist" / "index.html"
    assert "table2f/accuracy_vs_epoch.png" in report.read_text()  # the generated report, its figures beside it
    assert (report.parent / "table2f" / "accuracy_vs_epoch.png").is_file()
    config = (site / "reference" / "config" / "index.html").read_text()
    import dataclasses

    from droppick.train.config import TrainConfig

    for key in dataclasses.fields(TrainConfig):  # every key, with the docstring under it
        assert f'id="droppick.train.config.TrainConfig.{key.name}"' in config, key.name
    assert "p, fraction of the current subset" in config and "for tuning without the test set" in config
    own_loop = (site / "guide" / "own-loop" / "index.html").read_text()
    assert "The test suite runs this block as written" in own_loop  # the README's example, included
    assert "--8&lt;--" not in own_loop


def test_the_build_stays_strict():
    from mkdocs.config import load_config

    config = load_config(str(ROOT / "mkdocs.yml"))
    assert config.strict
    assert config.validation.links.not_found >= 30 and config.validation.links.anchors >= 30  # WARNING: fails


def test_the_readme_links_resolve():
    """The README is not part of the site, so mkdocs does not check its links; this does."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    local = [link for link in links if "://" not in link]
    assert len(local) >= 10
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_config_key_has_a_docstring_for_the_reference():
    """The API reference renders attribute docstrings, not comments: each TrainConfig field is
    followed by its string."""
    import ast

    tree = ast.parse((ROOT / "src" / "droppick" / "train" / "config.py").read_text())
    [cls] = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "TrainConfig"]
    body = cls.body
    undocumented = [node.target.id for node, after in zip(body, body[1:] + [None]) if isinstance(node, ast.AnnAssign)
                    and not (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                             and isinstance(after.value.value, str))]
    assert not undocumented, f"TrainConfig keys without a docstring under them: {undocumented}"
