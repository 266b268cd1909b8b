"""Detached child processes that outlive the command that started them.

`prism stack up` returns while Kafka and Redis keep running, so the services
are started in their own session and tracked by pid files. A pid is only
trusted while /proc says it is still the program we started (pids get reused).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def start_detached(
    cmd: Sequence[str], *, log_path: Path, marker: str, env: Mapping[str, str] | None = None
) -> int:
    """Start ``cmd`` in a new session with output appended to ``log_path``.

    Returns once the child has exec'd (its command line shows ``marker``) or
    exited, so that :func:`is_alive` is meaningful right away.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv built by us
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    deadline = time.monotonic() + 10.0
    while proc.poll() is None and not is_alive(proc.pid, marker) and time.monotonic() < deadline:
        time.sleep(0.01)
    log.debug("started pid=%s cmd=%s", proc.pid, cmd[0])
    return proc.pid


def _reap(pid: int) -> None:
    """Collect an exited child of this process so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int | None, marker: str) -> bool:
    """True when ``pid`` runs and its command line contains ``marker``."""
    if not pid:
        return False
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in {"Z", "X"} and marker in cmdline


def stop(pid: int | None, marker: str, *, timeout: float = 30.0) -> bool:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. True if it was running."""
    if not is_alive(pid, marker):
        return False
    assert pid is not None
    _signal(pid, signal.SIGTERM)
    if wait_gone(pid, marker, timeout):
        return True
    log.warning("pid=%s ignored SIGTERM for %.0fs; sending SIGKILL", pid, timeout)
    _signal(pid, signal.SIGKILL)
    wait_gone(pid, marker, 10.0)
    return True


def kill(pid: int | None, marker: str) -> None:
    """SIGKILL at once (fault-injection tests) and wait until it is gone."""
    if is_alive(pid, marker):
        assert pid is not None
        _signal(pid, signal.SIGKILL)
        wait_gone(pid, marker, 10.0)


def wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid, marker):
            return True
        time.sleep(0.1)
    return not is_alive(pid, marker)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def log_sizes(*paths: Path) -> dict[Path, int]:
    """Where each log ends now, so a later error shows only what one launch wrote."""
    return {path: path.stat().st_size if path.is_file() else 0 for path in paths}


def read_since(path: Path, offset: int) -> str:
    """The text appended to ``path`` after ``offset`` (logs are appended across restarts)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def excerpt(text: str, lines: int = 25) -> str:
    """The last lines of a log without Java stack frames, which bury the cause."""
    kept = [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith(("at ", "... "))
    ]
    return "\n".join(kept[-lines:]) or "(the log is empty)"
