"""mkdocs hook: the generated reports become pages of the site, read from where their scripts write them.

experiments/fashion_mnist_report.py, experiments/fashion_mnist_frontier.py, experiments/fashion_mnist_gpu.py
and bench/run_all.py write Markdown pages with their figures beside them. Each page and picture is added
under ``reports/`` with its path in the repository kept, so the links between a report's own files still
resolve and strict mode checks them; nothing is copied into docs/ by hand, so no page can go stale.
"""

from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]
REPORTS = {  # folder -> the files of it that are reports (pages and the figures they show)
    "experiments/fashion-mnist": ("**/*.md", "**/*.png"),
    "experiments/fashion-mnist-gpu": ("*.md", "*.png"),
    "bench": ("README.md", "results.md", "flake.md"),
}


def report_files() -> list[Path]:
    """Every report page and figure, relative to the repository."""
    found = set()
    for folder, patterns in REPORTS.items():
        for pattern in patterns:
            found.update(p.relative_to(REPO) for p in (REPO / folder).glob(pattern) if p.is_file())
    return sorted(found)


def on_files(files, config):
    for path in report_files():
        files.append(File.generated(config, f"reports/{path.as_posix()}", abs_src_path=str(REPO / path)))
    return files
