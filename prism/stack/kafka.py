"""A real Apache Kafka broker (KRaft, combined broker + controller) on 127.0.0.1.

The classpath comes from :mod:`prism.stack.jars`. Readiness is a real metadata
round-trip, never an open port: the broker accepts connections well before
its controller has elected itself and it can answer.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

from prism.stack import process
from prism.stack.jars import ensure_jars
from prism.stack.ports import free_port
from prism.stack.state import read_int, read_text, write_private, write_text
from runtime.errors import StackError
from runtime.settings import Settings

log = logging.getLogger(__name__)

MARKER = "kafka.Kafka"
PORT_CLASH = "Address already in use"


@dataclass(frozen=True)
class KafkaPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def config(self) -> Path:
        return self.root / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.root / "pid"

    @property
    def console_log(self) -> Path:
        return self.logs / "console.log"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def bootstrap_file(self) -> Path:
        return self.root / "bootstrap"

    @classmethod
    def of(cls, settings: Settings) -> KafkaPaths:
        return cls(settings.state_dir / "kafka")


@dataclass(frozen=True)
class Launch:
    """One start attempt: where it listens and where its logs began."""

    bootstrap: str
    pid: int
    log_marks: dict[Path, int] = field(default_factory=dict)

    def new_log_text(self) -> str:
        return "\n".join(process.read_since(path, at) for path, at in self.log_marks.items())


SCRAM_SECRET = re.compile(r"[A-Za-z0-9._~-]{1,128}")


@dataclass(frozen=True)
class BrokerSasl:
    """Serve clients on a SASL_PLAINTEXT listener with SCRAM; users made at format time.

    KRaft keeps SCRAM credentials in the metadata log, so the users (and the
    broker's own inter-broker user, ``broker_user``, with a random password)
    are written by ``kafka-storage format --add-scram`` before the first start
    (KIP-900). A data dir formatted earlier keeps the users it was formatted
    with. Names and passwords are restricted to URL-safe characters: they are
    pasted into the format tool's ``[name=..,password=..]`` syntax and a JAAS
    line. The controller listener stays PLAINTEXT on 127.0.0.1.
    """

    users: Mapping[str, str] = field(repr=False)  # name -> password
    mechanism: str = "SCRAM-SHA-512"
    broker_user: str = "broker"
    broker_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)

    def __post_init__(self) -> None:
        if self.mechanism not in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
            raise StackError(f"local broker SASL: {self.mechanism} is not a SCRAM mechanism")
        for name, password in self.credentials().items():
            if not (SCRAM_SECRET.fullmatch(name) and SCRAM_SECRET.fullmatch(password)):
                raise StackError(
                    f"local broker SASL user {name!r}: names and passwords may only use "
                    "letters, digits and . _ ~ -"
                )

    def credentials(self) -> dict[str, str]:
        return {self.broker_user: self.broker_password, **self.users}

    def client_security(self, user: str | None = None) -> dict[str, str]:
        """librdkafka properties of ``user`` (default: the broker's own user)."""
        name = user or self.broker_user
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": self.mechanism,
            "sasl.username": name,
            "sasl.password": self.credentials()[name],
        }

    def format_args(self) -> list[str]:
        return [
            arg
            for name, password in self.credentials().items()
            for arg in ("--add-scram", f"{self.mechanism}=[name={name},password={password}]")
        ]

    def properties(self, broker_port: int, controller_port: int) -> list[str]:
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.broker_user}" password="{self.broker_password}";'
        )
        return [
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{broker_port},"
            f"CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{broker_port}",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms={self.mechanism}",
            f"sasl.mechanism.inter.broker.protocol={self.mechanism}",
            f"listener.name.sasl_plaintext.{self.mechanism.lower()}.sasl.jaas.config={jaas}",
        ]


def new_cluster_id() -> str:
    """16 random bytes, urlsafe base64 without padding, never starting with '-'.

    A leading '-' would be read as an option by StorageTool's argument parser.
    """
    while True:
        cid = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def replication(brokers: int) -> tuple[int, int]:
    """(replication factor, min in-sync replicas) for a cluster of ``brokers`` nodes.

    Three copies once there are three nodes, and a write acknowledged by two of
    them: one broker may die without losing an ``acks=all`` record or refusing one.

    >>> replication(1), replication(2), replication(3), replication(5)
    ((1, 1), (2, 1), (3, 2), (3, 2))
    """
    factor = min(3, brokers)
    return factor, 2 if factor >= 3 else 1


def render_server_properties(
    *,
    broker_port: int,
    controller_port: int,
    data_dir: Path,
    sasl: BrokerSasl | None = None,
    node_id: int = 1,
    voters: str | None = None,
    brokers: int = 1,
) -> str:
    """The KRaft config of notes/kafka-local.md, sized for 2 cores.

    One node by default; a node of a ``brokers``-node cluster gets its
    ``node_id``, the shared static ``voters`` and the replication of
    :func:`replication` for internal and new topics.
    """
    listeners = (
        sasl.properties(broker_port, controller_port)
        if sasl
        else [
            f"listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    )
    factor, min_isr = replication(brokers)
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters or f'1@127.0.0.1:{controller_port}'}",
            *listeners,
            "controller.listener.names=CONTROLLER",
            f"log.dirs={data_dir}",
            f"offsets.topic.replication.factor={factor}",
            f"transaction.state.log.replication.factor={factor}",
            f"transaction.state.log.min.isr={min_isr}",
            f"share.coordinator.state.topic.replication.factor={factor}",
            f"share.coordinator.state.topic.min.isr={min_isr}",
            *(
                [f"default.replication.factor={factor}", f"min.insync.replicas={min_isr}"]
                if brokers > 1
                else []
            ),
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.num.partitions=1",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.partitions=3",
            "auto.create.topics.enable=false",
            # The default 128 MiB dedupe buffer is allocated on the heap.
            "log.cleaner.dedupe.buffer.size=8388608",
            "",
        ]
    )


#: the test JVM's flags (docs/local-stack.md): a broker that starts quickly and takes
#: little CPU beside the tests; benches drop them (``PRISM_KAFKA_JVM=bench``) so the
#: broker's share of a measurement is a production JVM's, not C1-compiled code's
TEST_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


def java_command(settings: Settings, libs: Path, paths: KafkaPaths, *args: str) -> list[str]:
    """JVM flags of the notes: small heap; serial GC and C1 unless ``kafka_jvm`` is bench."""
    log4j = resources.files("prism.stack") / "resources" / "log4j2.properties"
    return [
        "java",
        "-Xms128m",
        f"-Xmx{settings.kafka_heap}",
        *(TEST_JVM_FLAGS if settings.kafka_jvm == "test" else ()),
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={paths.logs}",
        "-cp",
        f"{libs}/*",
        *args,
    ]


def format_storage(
    settings: Settings, libs: Path, paths: KafkaPaths, sasl: BrokerSasl | None = None
) -> None:
    """Format the log dir once; ``--ignore-formatted`` keeps data across restarts."""
    cid_file = paths.root / "cluster.id"
    cluster_id = read_text(cid_file)
    if cluster_id is None:
        cluster_id = new_cluster_id()
        write_text(cid_file, cluster_id)
    cmd = java_command(
        settings,
        libs,
        paths,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id,
        "--config",
        str(paths.config),
        "--ignore-formatted",
        *(sasl.format_args() if sasl else ()),
    )
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        output = f"{result.stdout}{result.stderr}"
        for secret in sasl.credentials().values() if sasl else ():
            output = output.replace(secret, "***")
        raise StackError(f"formatting Kafka storage failed:\n{output}")


def prepare(settings: Settings) -> Path:
    """Everything a start needs that can fail before any process runs (Java, jars)."""
    if shutil.which("java") is None:
        raise StackError("Java 17+ is needed for the local Kafka broker: install openjdk-17.")
    return ensure_jars(settings)


def start(
    settings: Settings,
    *,
    timeout: float = 120.0,
    ports: tuple[int, int] | None = None,
    sasl: BrokerSasl | None = None,
) -> str:
    """Start the broker and return its bootstrap once it answers metadata.

    Free ports are picked by the kernel, so another process can take one
    between the pick and the broker's bind: on 'Address already in use' the
    start is retried once with new ports. ``ports`` (broker, controller) fixes
    the first attempt's ports, which is how the retry is tested. ``sasl``
    makes the client listener SASL_PLAINTEXT/SCRAM (see :class:`BrokerSasl`).
    """
    libs = prepare(settings)
    paths = KafkaPaths.of(settings)
    for attempt in (1, 2):
        launch = _launch(settings, libs, paths, ports if attempt == 1 else None, sasl)
        try:
            wait_ready(launch, paths, timeout=timeout, security=sasl and sasl.client_security())
            log.info("kafka ready bootstrap=%s pid=%s", launch.bootstrap, launch.pid)
            return launch.bootstrap
        except StackError:
            stop(settings)
            if attempt == 2 or PORT_CLASH not in launch.new_log_text():
                raise
            log.warning("port clash starting Kafka; retrying with new ports")
    raise AssertionError("unreachable")


def _launch(
    settings: Settings,
    libs: Path,
    paths: KafkaPaths,
    ports: tuple[int, int] | None,
    sasl: BrokerSasl | None = None,
) -> Launch:
    broker_port, controller_port = ports or (free_port(), free_port())
    paths.data.mkdir(parents=True, exist_ok=True)
    text = render_server_properties(
        broker_port=broker_port, controller_port=controller_port, data_dir=paths.data, sasl=sasl
    )
    (write_private if sasl else write_text)(paths.config, text)  # a JAAS password inside
    format_storage(settings, libs, paths, sasl)
    return start_broker(settings, libs, paths, f"127.0.0.1:{broker_port}")


def start_broker(settings: Settings, libs: Path, paths: KafkaPaths, bootstrap: str) -> Launch:
    """Start one formatted broker detached and record its pid and address.

    Shared by the single broker and each node of `prism stack up --brokers N`.
    """
    marks = process.log_sizes(paths.console_log, paths.server_log)
    pid = process.start_detached(
        java_command(settings, libs, paths, "kafka.Kafka", str(paths.config)),
        log_path=paths.console_log,
        marker=MARKER,
        env=dict(os.environ),
    )
    write_text(paths.pid_file, str(pid))
    write_text(paths.bootstrap_file, bootstrap)
    return Launch(bootstrap, pid, marks)


def wait_ready(
    launch: Launch, paths: KafkaPaths, *, timeout: float, security: dict[str, str] | None = None
) -> None:
    """Poll a metadata request until it succeeds, the process dies, or time runs out."""
    admin = probe_client(launch.bootstrap, security)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive(launch.pid, MARKER):
            raise StackError(
                "the Kafka broker exited during start-up; its log says:\n"
                f"{process.excerpt(launch.new_log_text())}\n(full logs in {paths.logs})"
            )
        if metadata_ok(admin):
            return
        time.sleep(0.2)
    raise StackError(
        f"Kafka at {launch.bootstrap} answered no metadata request within {timeout:.0f}s; "
        f"its log says:\n{process.excerpt(launch.new_log_text())}"
    )


def probe_client(bootstrap: str, security: dict[str, str] | None = None) -> AdminClient:
    """An admin client for readiness polls; connection-refused noise is expected, so muted."""
    return AdminClient(
        {
            **(security or {}),
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": 2000,
            "log_level": 0,
        }
    )


def metadata_ok(admin: AdminClient, timeout: float = 2.0) -> bool:
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # noqa: BLE001 - any client error means "not ready yet"
        return False


def running_pid(settings: Settings) -> int | None:
    pid = read_int(KafkaPaths.of(settings).pid_file)
    return pid if process.is_alive(pid, MARKER) else None


def running_bootstrap(settings: Settings) -> str | None:
    """The address of a broker this state dir started and that still runs."""
    if running_pid(settings) is None:
        return None
    return read_text(KafkaPaths.of(settings).bootstrap_file)


def stop(settings: Settings, *, timeout: float = 30.0) -> bool:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``)."""
    paths = KafkaPaths.of(settings)
    stopped = process.stop(read_int(paths.pid_file), MARKER, timeout=timeout)
    paths.pid_file.unlink(missing_ok=True)
    return stopped
