"""droppick's version as installed. pyproject.toml is the one place it is written; installing the
package copies it into the package metadata, which this reads."""

from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    """The version in droppick's installed metadata, or "0+unknown" when the source tree is imported
    without being installed (``src/`` on ``PYTHONPATH``): there is no metadata then, and a missing
    version should not stop a library import or a run's summary.json."""
    try:
        return version("droppick")
    except PackageNotFoundError:
        return "0+unknown"
