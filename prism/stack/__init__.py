"""The local stack: a real Kafka broker and a real Redis as local processes.

`up` starts what the environment does not already provide (PRISM_KAFKA_BOOTSTRAP
/ PRISM_REDIS_URL set by a user or docker-compose win), reuses what this state
dir already runs, writes the addresses to ``settings.env_file`` for later
commands and tests, and returns them. Each component is decided on its own,
so a half-running stack is completed rather than started twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prism.stack import kafka, kafka_cluster, redis_server
from prism.stack.state import locked, read_env_file, write_env_file
from runtime.errors import StackError
from runtime.kafka_security import kafka_security
from runtime.settings import Settings

log = logging.getLogger(__name__)
_NOT_CONFIGURED = "not configured; run `prism stack up`"


@dataclass(frozen=True)
class StackInfo:
    """Where the services are, and which of them this call started or found."""

    kafka_bootstrap: str
    redis_url: str
    redis_query_url: str
    started: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()
    given: tuple[str, ...] = ()
    #: service role -> its least-privilege Redis URL (our redis-server only; a given
    #: Redis has just the URLs the user gave)
    redis_role_urls: dict[str, str] = field(default_factory=dict)
    #: nodes of the local Kafka cluster this state dir runs (1: the single broker)
    kafka_brokers: int = 1

    def role_env(self) -> dict[str, str]:
        """``PRISM_REDIS_URL_<ROLE>`` for ``prism up``'s supervisor (see redis_acl)."""
        return {
            f"PRISM_REDIS_URL_{role.upper()}": url for role, url in self.redis_role_urls.items()
        }

    def env_lines(self) -> dict[str, str]:
        """The addresses; a local cluster adds the replication factor topics need on it."""
        lines = {
            "PRISM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "PRISM_REDIS_URL": self.redis_url,
            "PRISM_REDIS_QUERY_URL": self.redis_query_url,
        }
        if self.kafka_brokers > 1:
            lines["PRISM_REPLICATION_FACTOR"] = str(kafka.replication(self.kafka_brokers)[0])
        return lines


@dataclass(frozen=True)
class ComponentStatus:
    """One row of `prism stack status`; ``alive`` is None for a service we did not start."""

    name: str
    address: str
    pid: int | None
    alive: bool | None
    reachable: bool
    detail: str

    @property
    def healthy(self) -> bool:
        return self.reachable and self.alive is not False


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


def up(settings: Settings, *, brokers: int = 1) -> StackInfo:
    """Start Kafka and Redis unless already running here or given by the environment.

    ``settings`` must come from the environment only (not from the stack file),
    so a user's own cluster is used and a stale local stack is not. On failure,
    whatever this call started is stopped again. ``brokers`` > 1 starts a local
    cluster of that many nodes instead of the single broker (see kafka_cluster).
    """
    with locked(settings.state_dir / "stack.lock"):
        started: list[str] = []
        try:
            info = _up(settings, started, brokers)
        except BaseException:
            for name in reversed(started):
                (_stop_kafka if name == "kafka" else redis_server.stop)(settings)
            raise
        write_env_file(settings.env_file, info.env_lines())
        return info


def _stop_kafka(settings: Settings) -> bool:
    """Stop this state dir's Kafka, a single broker or a cluster (never both run)."""
    return kafka_cluster.stop(settings) | kafka.stop(settings)


def _running_kafka(settings: Settings, brokers: int) -> str | None:
    """This state dir's running Kafka of the asked size; another size is an error."""
    single, cluster = kafka.running_pid(settings), kafka_cluster.any_running(settings)
    if (brokers == 1 and cluster) or (brokers > 1 and single is not None):
        size = kafka_cluster.formatted_size(settings) if cluster else 1
        raise StackError(
            f"a {size}-broker local Kafka runs; `prism stack down` first to start "
            f"{brokers} broker(s)"
        )
    if brokers == 1:
        return kafka.running_bootstrap(settings)
    return kafka_cluster.running_bootstrap(settings, brokers)


def _start_kafka(settings: Settings, brokers: int) -> str:
    if brokers == 1:
        return kafka.start(settings)
    return kafka_cluster.start(settings, brokers)


def _up(settings: Settings, started: list[str], brokers: int = 1) -> StackInfo:
    given, reused = [], []
    bootstrap = settings.kafka_bootstrap or _running_kafka(settings, brokers)
    if bootstrap is None:
        _stop_kafka(settings)  # a broker whose address was lost cannot be reused
        kafka.prepare(settings)  # fail on jars/Java before anything is started
    else:
        (given if settings.kafka_bootstrap else reused).append("kafka")
    redis_url = _secret(settings.redis_url)
    query_url = _secret(settings.redis_query_url) or redis_url
    roles: dict[str, str] = {}
    if redis_url is not None:
        given.append("redis")
    elif (running := redis_server.running_addresses(settings)) is not None:
        redis_url, query_url, roles = running.url, running.query_url, running.role_urls
        reused.append("redis")
    else:
        redis_server.stop(settings)
        addresses = redis_server.start(settings)
        started.append("redis")
        redis_url, query_url, roles = addresses.url, addresses.query_url, addresses.role_urls
    if bootstrap is None:
        bootstrap = _start_kafka(settings, brokers)
        started.append("kafka")
    assert redis_url is not None and query_url is not None
    log.info("stack up started=%s reused=%s given=%s", started, reused, given)
    local = 1 if settings.kafka_bootstrap else brokers
    return StackInfo(
        bootstrap, redis_url, query_url, tuple(started), tuple(reused), tuple(given), roles, local
    )


def down(settings: Settings) -> list[str]:
    """Stop whatever the local stack started; idempotent. Returns what was stopped."""
    with locked(settings.state_dir / "stack.lock"):
        stopped = [
            name
            for name, stop in (("kafka", _stop_kafka), ("redis", redis_server.stop))
            if stop(settings)
        ]
        settings.env_file.unlink(missing_ok=True)
        return stopped


def status(settings: Settings) -> list[ComponentStatus]:
    """Health of each component, by a real metadata request and a real PING."""
    env = read_env_file(settings.env_file)
    bootstrap = settings.kafka_bootstrap or env.get("PRISM_KAFKA_BOOTSTRAP")
    redis_url = _secret(settings.redis_url) or env.get("PRISM_REDIS_URL")
    kafka_rows = [_kafka_status(settings, bootstrap)]
    if settings.kafka_bootstrap is None and bootstrap and _cluster_shown(settings, bootstrap):
        kafka_rows += _node_statuses(settings)
    return [*kafka_rows, _redis_status(settings, redis_url)]


def _alive(pid: int | None, managed: bool) -> bool | None:
    return (pid is not None) if managed else None


def _kafka_status(settings: Settings, bootstrap: str | None) -> ComponentStatus:
    if not bootstrap:
        return ComponentStatus("kafka", "-", None, None, False, _NOT_CONFIGURED)
    pid = kafka.running_pid(settings)
    managed = settings.kafka_bootstrap is None  # ours unless the user gave the address
    ok = kafka.metadata_ok(kafka.probe_client(bootstrap, kafka_security(settings)), timeout=5.0)
    detail = "metadata ok" if ok else "no metadata answer"
    if managed and _cluster_shown(settings, bootstrap):  # the nodes have their own rows and pids
        pids = kafka_cluster.running_pids(settings).values()
        running = sum(p is not None for p in pids)
        detail += f"; {running}/{len(pids)} nodes running"
        return ComponentStatus("kafka", bootstrap, None, running == len(pids), ok, detail)
    return ComponentStatus("kafka", bootstrap, pid, _alive(pid, managed), ok, detail)


def _cluster_shown(settings: Settings, bootstrap: str) -> bool:
    """The address `up` wrote is the local cluster's: its nodes get rows of their own."""
    return bootstrap == kafka_cluster.bootstrap(settings)


def _node_statuses(settings: Settings) -> list[ComponentStatus]:
    """One row per node of the local cluster, each asked on its own address."""
    rows = []
    for node_id, pid in kafka_cluster.running_pids(settings).items():
        address = kafka_cluster.node_address(settings, node_id) or "-"
        listed = kafka_cluster.brokers_in_metadata(address, timeout=5.0) if pid else set()
        detail = f"{len(listed)} brokers in metadata" if listed else "no metadata answer"
        rows.append(
            ComponentStatus(f"kafka-{node_id}", address, pid, pid is not None, bool(listed), detail)
        )
    return rows


def _redis_status(settings: Settings, redis_url: str | None) -> ComponentStatus:
    if not redis_url:
        return ComponentStatus("redis", "-", None, None, False, _NOT_CONFIGURED)
    pid = redis_server.running_pid(settings)
    managed = settings.redis_url is None
    ok = redis_server.ping(redis_url)
    address = redis_url.rsplit("@", 1)[-1]  # never show the password
    detail = "PING ok" if ok else "no PING answer"
    return ComponentStatus("redis", address, pid, _alive(pid, managed), ok, detail)
