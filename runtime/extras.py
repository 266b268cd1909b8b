"""Optional dependencies: a missing extra is a message naming it, not an ImportError.

The Faust engine and the plots are options, so their packages are pyproject extras
(``[faust]``, ``[plot]``) and only the paths that choose them import them. Those
paths call :func:`require_extra` before any work starts, so a missing package
stops the command at once with the ``pip install`` line that fixes it.
"""

from __future__ import annotations

import importlib.util

from runtime.errors import UsageError

#: extra -> the top-level modules its packages provide
EXTRAS: dict[str, tuple[str, ...]] = {
    "faust": ("faust", "aiokafka", "mode"),
    "plot": ("matplotlib",),
}


class MissingExtraError(UsageError):
    """A chosen option needs an extra that is not installed."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that is itself missing or broken
        return False


def require_extra(extra: str, *, needed_by: str) -> None:
    """Raise :class:`MissingExtraError` unless every package of ``extra`` is importable."""
    missing = [m for m in EXTRAS[extra] if not _installed(m)]
    if missing:
        raise MissingExtraError(
            f"{needed_by} needs the [{extra}] extra ({', '.join(missing)} not installed): "
            f"pip install 'prism-stream[{extra}]' (in a checkout: pip install -e '.[{extra}]')"
        )
