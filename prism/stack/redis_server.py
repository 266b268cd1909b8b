"""Debian's redis-server on 127.0.0.1 with an admin password and least-privilege users.

The admin password protects everything; each kind of service gets its own
ACL user (:mod:`prism.stack.redis_acl`): the central worker and the merger
may write only their own keys and the registry, edge agents and the
``prism-query`` user (`prism models ...`, dashboards) may only read.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from prism.stack import process
from prism.stack.ports import free_port
from prism.stack.redis_acl import QUERY_USER, ROLE_USERS, user_line
from prism.stack.state import read_env_file, read_int, write_env_file, write_private, write_text
from runtime.errors import StackError
from runtime.settings import Settings

log = logging.getLogger(__name__)

MARKER = "redis-server"


@dataclass(frozen=True)
class RedisAddresses:
    url: str
    query_url: str
    #: service role (central, merger, edge, shadow) -> the URL of its least-privilege user
    role_urls: dict[str, str] = field(default_factory=dict)

    def as_env(self) -> dict[str, str]:
        roles = {f"url_{role}": url for role, url in self.role_urls.items()}
        return {"url": self.url, "query_url": self.query_url, **roles}


def _root(settings: Settings) -> Path:
    return settings.state_dir / "redis"


def render_config(
    *, port: int, password: str, passwords: dict[str, str], prefix: str, data_dir: Path
) -> str:
    """redis.conf: loopback only, AOF persistence, admin + one least-privilege user each.

    ``passwords``: Redis user -> password, for the users of :mod:`prism.stack.redis_acl`.
    """
    return "\n".join(
        [
            "bind 127.0.0.1",
            f"port {port}",
            "protected-mode yes",
            "daemonize no",
            f"dir {data_dir}",
            "appendonly yes",
            # fsync before acknowledging: a checkpoint or registry version a service saw
            # acknowledged survives a power loss too (a killed redis-server loses nothing
            # either way: the AOF is written before the reply; everysec could lose the
            # last second to a machine crash). Prism writes a few times a second.
            "appendfsync always",
            'save ""',
            f"requirepass {password}",
            *(f"user {user_line(u, pw, prefix)}" for u, pw in sorted(passwords.items())),
            "",
        ]
    )


def start(settings: Settings, *, timeout: float = 20.0) -> RedisAddresses:
    """Start redis-server with fresh passwords; one retry if its port was taken meanwhile."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError(
            "redis-server is not installed: run `make setup` (it installs Debian's redis-server), "
            "or point Prism at an existing Redis with PRISM_REDIS_URL."
        )
    for attempt in (1, 2):
        try:
            return _launch(settings, binary, timeout)
        except StackError as e:
            stop(settings)
            if attempt == 2 or "Address already in use" not in str(e):
                raise
            log.warning("port clash starting redis-server; retrying with a new port")
    raise AssertionError("unreachable")


def restart(settings: Settings, *, timeout: float = 20.0) -> RedisAddresses:
    """Start the stopped server of this state dir again: same port, passwords and data (AOF)."""
    binary = shutil.which("redis-server")
    if binary is None or not (_root(settings) / "server.json").exists():
        raise StackError(f"no redis-server to restart in {_root(settings)}")
    saved = json.loads((_root(settings) / "server.json").read_text())
    return _launch(settings, binary, timeout, kept=saved)


def _launch(
    settings: Settings, binary: str, timeout: float, *, kept: dict | None = None
) -> RedisAddresses:
    root = _root(settings)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    users = [QUERY_USER, *ROLE_USERS.values()]
    kept = kept or {
        "port": free_port(),
        "password": secrets.token_urlsafe(18),
        "passwords": {u: secrets.token_urlsafe(18) for u in users},
    }
    port, password, passwords = kept["port"], kept["password"], kept["passwords"]
    write_private(root / "server.json", json.dumps(kept))
    config = root / "redis.conf"
    write_private(
        config,
        render_config(
            port=port,
            password=password,
            passwords=passwords,
            prefix=settings.redis_prefix,
            data_dir=data,
        ),
    )
    log_path = root / "redis.log"
    marks = process.log_sizes(log_path)
    pid = process.start_detached([binary, str(config)], log_path=log_path, marker=MARKER)
    write_text(root / "pid", str(pid))

    def url_of(user: str) -> str:
        return f"redis://{user}:{passwords[user]}@127.0.0.1:{port}/0"

    addresses = RedisAddresses(
        url=f"redis://:{password}@127.0.0.1:{port}/0",
        query_url=url_of(QUERY_USER),
        role_urls={role: url_of(user) for role, user in ROLE_USERS.items()},
    )
    # Kept beside the pid so `up` can reuse a running server even without stack.env.
    write_env_file(root / "addresses.env", addresses.as_env())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive(pid, MARKER):
            said = process.excerpt(process.read_since(log_path, marks[log_path]))
            raise StackError(f"redis-server exited during start-up:\n{said}")
        if ping(addresses.url):
            log.info("redis ready port=%d pid=%d", port, pid)
            return addresses
        time.sleep(0.1)
    raise StackError(f"redis-server answered no PING within {timeout:.0f}s (log: {log_path})")


def ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def running_pid(settings: Settings) -> int | None:
    pid = read_int(_root(settings) / "pid")
    return pid if process.is_alive(pid, MARKER) else None


def running_addresses(settings: Settings) -> RedisAddresses | None:
    """The addresses of a server this state dir started and that still runs."""
    if running_pid(settings) is None:
        return None
    saved = read_env_file(_root(settings) / "addresses.env")
    if "url" not in saved or "query_url" not in saved:
        return None
    roles = {role: saved[f"url_{role}"] for role in ROLE_USERS if f"url_{role}" in saved}
    return RedisAddresses(saved["url"], saved["query_url"], roles)


def stop(settings: Settings, *, timeout: float = 30.0) -> bool:
    """SIGTERM makes redis-server flush its AOF and exit; SIGKILL after ``timeout``."""
    pid_file = _root(settings) / "pid"
    stopped = process.stop(read_int(pid_file), MARKER, timeout=timeout)
    pid_file.unlink(missing_ok=True)
    (_root(settings) / "addresses.env").unlink(missing_ok=True)
    return stopped
