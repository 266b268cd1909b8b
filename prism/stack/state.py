"""Where the local stack keeps its files, and the env file other commands read.

Layout under ``settings.state_dir``::

    stack.env              PRISM_* addresses written by `prism stack up`
    kafka/  server.properties, cluster.id, pid, data/, logs/
    redis/  redis.conf, pid, data/, redis.log
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``KEY=value`` lines readable by both a shell and pydantic-settings.

    The file holds the Redis password, so it is created readable by its owner only.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{key}={value}\n" for key, value in values.items())
    tmp.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` pairs of an env file; missing file → empty."""
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
