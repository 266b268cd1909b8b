"""``prism --version``: the installed distribution's version, else the source tree's.

The installed metadata is what pip resolved against, so it wins; a checkout run
without installing (``PYTHONPATH=.``) still answers, from ``prism.__version__``,
the one place pyproject.toml reads the version from.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "prism-stream"


def version() -> str:
    from prism import __version__

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return f"{__version__} (not installed)"
