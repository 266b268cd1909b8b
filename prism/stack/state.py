"""Where the local stack keeps its files, and the env file other commands read.

Layout under ``settings.state_dir``::

    stack.env              PRISM_* addresses written by `prism stack up`
    stack.lock             held while `up` / `down` run, so two never interleave
    kafka/  server.properties, cluster.id, pid, bootstrap, data/, logs/
    redis/  redis.conf, pid, data/, redis.log
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a file only its owner can read (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``KEY=value`` lines readable by both a shell and pydantic-settings."""
    write_private(path, "".join(f"{key}={value}\n" for key, value in values.items()))


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


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block.

    Two `prism stack up` on one state dir, or two first runs filling one jar
    cache, would otherwise start twice or delete each other's download. The
    kernel drops the lock if the holder dies, so a crash never leaves it stuck.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
