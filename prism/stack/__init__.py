"""The local stack: a real Kafka broker and a real Redis as local processes.

`up` starts what the environment does not already provide (PRISM_KAFKA_BOOTSTRAP
/ PRISM_REDIS_URL set by a user or docker-compose win), writes the addresses to
``settings.env_file`` for later commands and tests, and returns them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prism.settings import Settings
from prism.stack import kafka, redis_server
from prism.stack.state import read_env_file, write_env_file

log = logging.getLogger(__name__)
_NOT_CONFIGURED = "not configured; run `prism stack up`"


@dataclass(frozen=True)
class StackInfo:
    """Where the services are, and whether this call started them."""

    kafka_bootstrap: str
    redis_url: str
    redis_query_url: str
    started: tuple[str, ...] = ()

    def env_lines(self) -> dict[str, str]:
        return {
            "PRISM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "PRISM_REDIS_URL": self.redis_url,
            "PRISM_REDIS_QUERY_URL": self.redis_query_url,
        }


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    healthy: bool
    detail: str


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


def up(settings: Settings) -> StackInfo:
    """Start Kafka and Redis unless already running or given by the environment.

    ``settings`` must come from the environment only (not from the stack file),
    so a user's own cluster is used and a stale local stack is not.
    """
    existing = read_env_file(settings.env_file)
    if existing and kafka.running_pid(settings) and redis_server.running_pid(settings):
        log.info("local stack already running state_dir=%s", settings.state_dir)
        return StackInfo(
            existing["PRISM_KAFKA_BOOTSTRAP"],
            existing["PRISM_REDIS_URL"],
            existing.get("PRISM_REDIS_QUERY_URL", existing["PRISM_REDIS_URL"]),
        )
    started: list[str] = []
    redis_url = _secret(settings.redis_url)
    query_url = _secret(settings.redis_query_url) or redis_url
    try:
        if redis_url is None:
            addresses = redis_server.start(settings)
            redis_url, query_url = addresses.url, addresses.query_url
            started.append("redis")
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            bootstrap = kafka.start(settings)
            started.append("kafka")
    except BaseException:
        down(settings)
        raise
    assert query_url is not None
    info = StackInfo(bootstrap, redis_url, query_url, tuple(started))
    write_env_file(settings.env_file, info.env_lines())
    return info


def down(settings: Settings) -> list[str]:
    """Stop whatever the local stack started; idempotent. Returns what was stopped."""
    stopped = [name for name, stop in (("kafka", kafka.stop), ("redis", redis_server.stop))
               if stop(settings)]  # fmt: skip
    settings.env_file.unlink(missing_ok=True)
    return stopped


def status(settings: Settings) -> list[ComponentStatus]:
    """Health of each component, by a real metadata request and a real PING."""
    env = read_env_file(settings.env_file)
    bootstrap = settings.kafka_bootstrap or env.get("PRISM_KAFKA_BOOTSTRAP")
    redis_url = _secret(settings.redis_url) or env.get("PRISM_REDIS_URL")
    rows = []
    if bootstrap:
        ok = kafka.metadata_ok(kafka.probe_client(bootstrap), timeout=5.0)
        rows.append(ComponentStatus("kafka", bootstrap, kafka.running_pid(settings), ok,
                                    "metadata ok" if ok else "no metadata answer"))  # fmt: skip
    else:
        rows.append(ComponentStatus("kafka", "-", None, False, _NOT_CONFIGURED))
    if redis_url:
        ok = redis_server.ping(redis_url)
        address = redis_url.rsplit("@", 1)[-1]
        rows.append(ComponentStatus("redis", address, redis_server.running_pid(settings), ok,
                                    "PING ok" if ok else "no PING answer"))  # fmt: skip
    else:
        rows.append(ComponentStatus("redis", "-", None, False, _NOT_CONFIGURED))
    return rows
