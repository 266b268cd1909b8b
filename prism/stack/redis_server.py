"""Debian's redis-server on 127.0.0.1 with a password and a read-only query user.

The password protects the registry; the ``prism-query`` ACL user can read every
key but write none, which is all that `prism models ...` and dashboards need.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from prism.errors import StackError
from prism.settings import Settings
from prism.stack import process
from prism.stack.ports import free_port
from prism.stack.state import read_int, write_text

MARKER = "redis-server"
QUERY_USER = "prism-query"


@dataclass(frozen=True)
class RedisAddresses:
    url: str
    query_url: str


def _root(settings: Settings) -> Path:
    return settings.state_dir / "redis"


def render_config(*, port: int, password: str, query_password: str, data_dir: Path) -> str:
    """redis.conf: loopback only, AOF persistence, default user + read-only user."""
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {data_dir}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            f"requirepass {password}",
            f"user {QUERY_USER} on >{query_password} ~* &* -@all +@read +@connection",
            "",
        ]
    )


def start(settings: Settings, *, timeout: float = 20.0) -> RedisAddresses:
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis-server is not installed: run `make setup` (apt-get redis-server).")
    root = _root(settings)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    password, query_password = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    config = root / "redis.conf"
    write_text(config, render_config(port=port, password=password, query_password=query_password,
                                     data_dir=data))  # fmt: skip
    config.chmod(0o600)
    pid = process.start_detached([binary, str(config)], log_path=root / "redis.log", marker=MARKER)
    write_text(root / "pid", str(pid))
    addresses = RedisAddresses(
        url=f"redis://:{password}@127.0.0.1:{port}/0",
        query_url=f"redis://{QUERY_USER}:{query_password}@127.0.0.1:{port}/0",
    )
    _wait_ready(addresses.url, pid, root / "redis.log", timeout)
    return addresses


def _wait_ready(url: str, pid: int, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive(pid, MARKER):
            raise StackError(f"redis-server exited during start-up:\n{process.tail(log_path)}")
        if ping(url):
            return
        time.sleep(0.1)
    raise StackError(f"redis-server answered no PING within {timeout:.0f}s")


def ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def running_pid(settings: Settings) -> int | None:
    pid = read_int(_root(settings) / "pid")
    return pid if process.is_alive(pid, MARKER) else None


def stop(settings: Settings, *, timeout: float = 30.0) -> bool:
    """SIGTERM makes redis-server flush its AOF and exit; SIGKILL after ``timeout``."""
    pid_file = _root(settings) / "pid"
    stopped = process.stop(read_int(pid_file), MARKER, timeout=timeout)
    pid_file.unlink(missing_ok=True)
    return stopped
