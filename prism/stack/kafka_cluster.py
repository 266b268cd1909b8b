"""Several KRaft nodes on 127.0.0.1: the local stack's `--brokers N` (N > 1).

A single broker cannot show that ``acks=all`` and idempotence survive a leader
change; three can. Every node is a combined broker + controller with its own
ports and log dir, all formatted with one cluster id and one static voter set,
so any one node may die and the other two still elect a controller and lead
every partition (replication factor 3, ``min.insync.replicas`` 2; see
:func:`prism.stack.kafka.replication`).

Layout under ``settings.state_dir``: ``kafka-cluster/`` holds ``brokers`` (the
size it was formatted for), ``cluster.id``, ``bootstrap`` and ``node-<id>/``,
each laid out like the single broker's ``kafka/``. The single broker's files
are never touched, so the default stack stays exactly as it was.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prism.stack import process
from prism.stack.kafka import (
    MARKER,
    PORT_CLASH,
    KafkaPaths,
    Launch,
    format_storage,
    new_cluster_id,
    prepare,
    probe_client,
    render_server_properties,
    start_broker,
)
from prism.stack.ports import free_port
from prism.stack.state import read_int, read_text, write_text
from runtime.errors import StackError
from runtime.settings import Settings

log = logging.getLogger(__name__)


def root(settings: Settings) -> Path:
    return settings.state_dir / "kafka-cluster"


def formatted_size(settings: Settings) -> int | None:
    """How many nodes this state dir's cluster was formatted for (None: never)."""
    return read_int(root(settings) / "brokers")


def node_paths(settings: Settings, brokers: int) -> dict[int, KafkaPaths]:
    """Node id -> its files; ids run from 1 like the single broker's."""
    return {i: KafkaPaths(root(settings) / f"node-{i}") for i in range(1, brokers + 1)}


@dataclass(frozen=True)
class Node:
    """One node's identity and ports: what its server.properties is rendered from."""

    node_id: int
    broker_port: int
    controller_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def voter(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.controller_port}"


def plan(brokers: int, ports: list[tuple[int, int]] | None = None) -> list[Node]:
    """Nodes 1..N on the given (broker, controller) ports, or fresh free ones."""
    chosen = ports or [(free_port(), free_port()) for _ in range(brokers)]
    return [Node(i, b, c) for i, (b, c) in enumerate(chosen, start=1)]


def bootstrap_of(nodes: list[Node]) -> str:
    return ",".join(node.address for node in nodes)


def _check_size(settings: Settings, brokers: int) -> None:
    """A static voter set is fixed at format time: a different size needs a new dir."""
    size = formatted_size(settings)
    if size is not None and size != brokers:
        raise StackError(
            f"{root(settings)} holds a {size}-broker cluster; run `prism stack up "
            f"--brokers {size}`, or `prism stack down` and remove that directory "
            f"(its topics go with it) to start a {brokers}-broker one"
        )


def start(
    settings: Settings,
    brokers: int,
    *,
    timeout: float = 180.0,
    ports: list[tuple[int, int]] | None = None,
) -> str:
    """Start ``brokers`` nodes; return the bootstrap list once all are in the metadata.

    Like the single broker, a port taken between the pick and the bind makes
    one retry on new ports; ``ports`` fixes the first attempt's (one (broker,
    controller) pair per node), which is how a test restarts a node in place.
    """
    if brokers < 2:
        raise StackError("a cluster has at least 2 brokers; one is `prism stack up`'s default")
    _check_size(settings, brokers)
    libs = prepare(settings)
    for attempt in (1, 2):
        nodes = plan(brokers, ports if attempt == 1 else None)
        launches = _launch_all(settings, libs, nodes)
        try:
            wait_all_ready(settings, launches, brokers, timeout=timeout)
            log.info("kafka cluster ready bootstrap=%s", bootstrap_of(nodes))
            return bootstrap_of(nodes)
        except StackError:
            stop(settings)
            text = "\n".join(launch.new_log_text() for launch in launches)
            if attempt == 2 or PORT_CLASH not in text:
                raise
            log.warning("port clash starting the Kafka cluster; retrying with new ports")
    raise AssertionError("unreachable")


def _launch_all(settings: Settings, libs: Path, nodes: list[Node]) -> list[Launch]:
    base = root(settings)
    cluster_id = read_text(base / "cluster.id")
    if cluster_id is None:
        cluster_id = new_cluster_id()
        write_text(base / "cluster.id", cluster_id)
    write_text(base / "brokers", str(len(nodes)))
    voters = ",".join(node.voter for node in nodes)
    paths = node_paths(settings, len(nodes))
    launches = [_launch(settings, libs, paths[n.node_id], n, voters, cluster_id) for n in nodes]
    write_text(base / "bootstrap", bootstrap_of(nodes))
    return launches


def _launch(
    settings: Settings, libs: Path, paths: KafkaPaths, node: Node, voters: str, cluster_id: str
) -> Launch:
    paths.data.mkdir(parents=True, exist_ok=True)
    text = render_server_properties(
        broker_port=node.broker_port,
        controller_port=node.controller_port,
        data_dir=paths.data,
        node_id=node.node_id,
        voters=voters,
        brokers=len(voters.split(",")),
    )
    write_text(paths.config, text)
    write_text(paths.root / "cluster.id", cluster_id)  # format_storage reads it here
    format_storage(settings, libs, paths)
    return start_broker(settings, libs, paths, node.address)


def brokers_in_metadata(bootstrap: str, timeout: float = 2.0) -> set[int]:
    """The node ids a metadata answer lists; empty when nobody answers."""
    try:
        return set(probe_client(bootstrap).list_topics(timeout=timeout).brokers)
    except Exception:  # noqa: BLE001 - any client error means "not (all) there yet"
        return set()


def wait_all_ready(
    settings: Settings, launches: list[Launch], brokers: int, *, timeout: float
) -> None:
    """Until every node is registered, or one dies, or time runs out."""
    bootstrap = ",".join(launch.bootstrap for launch in launches)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for launch in launches:
            if not process.is_alive(launch.pid, MARKER):
                raise StackError(
                    f"Kafka node at {launch.bootstrap} exited during start-up; its log says:\n"
                    f"{process.excerpt(launch.new_log_text())}\n(logs under {root(settings)})"
                )
        if len(brokers_in_metadata(bootstrap)) >= brokers:
            return
        time.sleep(0.3)
    raise StackError(
        f"the {brokers}-broker Kafka cluster at {bootstrap} did not list every node within "
        f"{timeout:.0f}s; logs under {root(settings)}"
    )


def node_pid(settings: Settings, node_id: int) -> int | None:
    """The pid of a node this state dir started and that still runs."""
    paths = KafkaPaths(root(settings) / f"node-{node_id}")
    pid = read_int(paths.pid_file)
    return pid if process.is_alive(pid, MARKER) else None


def running_pids(settings: Settings) -> dict[int, int | None]:
    """Node id -> pid (None: not running), for every node of the formatted cluster."""
    size = formatted_size(settings) or 0
    return {i: node_pid(settings, i) for i in range(1, size + 1)}


def node_address(settings: Settings, node_id: int) -> str | None:
    return read_text(root(settings) / f"node-{node_id}" / "bootstrap")


def bootstrap(settings: Settings) -> str | None:
    """The bootstrap list of the cluster's last start (None: never started)."""
    return read_text(root(settings) / "bootstrap")


def running_bootstrap(settings: Settings, brokers: int) -> str | None:
    """The bootstrap list when all ``brokers`` nodes of this state dir run."""
    pids = running_pids(settings)
    if formatted_size(settings) != brokers or None in pids.values():
        return None
    return bootstrap(settings)


def any_running(settings: Settings) -> bool:
    return any(pid is not None for pid in running_pids(settings).values())


def stop(settings: Settings, *, timeout: float = 30.0) -> bool:
    """Stop every node at once (SIGTERM, SIGKILL after ``timeout``); True if any ran.

    At once, not one by one: the last node of a quorum that lost its majority
    cannot finish a controlled shutdown and would use up its whole timeout.
    """
    nodes = list(node_paths(settings, formatted_size(settings) or 0).values())
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        ran = list(
            pool.map(lambda p: process.stop(read_int(p.pid_file), MARKER, timeout=timeout), nodes)
        )
    for paths in nodes:
        paths.pid_file.unlink(missing_ok=True)
    return any(ran)
