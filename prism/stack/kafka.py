"""A real Apache Kafka broker (KRaft, combined broker + controller) on 127.0.0.1.

No Debian package or PyPI wheel ships the broker, so its classpath is assembled
from Maven Central with the committed ``resources/pom.xml`` and cached outside
the repo; only the first start downloads. Readiness is a real metadata
round-trip, never an open port.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

from prism.errors import StackError
from prism.settings import Settings
from prism.stack import process
from prism.stack.ports import free_port
from prism.stack.state import read_int, write_text

log = logging.getLogger(__name__)

MARKER = "kafka.Kafka"
_COMPLETE = ".complete"


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
    def bootstrap_file(self) -> Path:
        return self.root / "bootstrap"

    @classmethod
    def of(cls, settings: Settings) -> KafkaPaths:
        return cls(settings.state_dir / "kafka")


def new_cluster_id() -> str:
    """16 random bytes, urlsafe base64 without padding, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def render_server_properties(*, broker_port: int, controller_port: int, data_dir: Path) -> str:
    """The single-node KRaft config of notes/kafka-local.md, sized for 2 cores."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}",
            "inter.broker.listener.name=PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.num.partitions=1",
            "num.network.threads=2",
            "num.io.threads=2",
            "num.partitions=3",
            "auto.create.topics.enable=false",
            "log.cleaner.dedupe.buffer.size=8388608",
            "",
        ]
    )


def ensure_jars(settings: Settings) -> Path:
    """The broker's jar directory, downloaded from Maven Central on first use."""
    libs = settings.cache_dir / f"kafka-{settings.kafka_version}" / "libs"
    if (libs / _COMPLETE).is_file():
        return libs
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch the Kafka jars: run `make setup`.")
    shutil.rmtree(libs, ignore_errors=True)
    libs.mkdir(parents=True)
    pom = resources.files("prism.stack") / "resources" / "pom.xml"
    log.info(
        "fetching Apache Kafka %s jars from Maven Central into %s", settings.kafka_version, libs
    )
    cmd = [
        "mvn", "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
        f"-Dkafka.version={settings.kafka_version}",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        shutil.rmtree(libs, ignore_errors=True)
        raise StackError(
            "could not fetch the Kafka broker jars from Maven Central (is it reachable?).\n"
            "Point Prism at an existing broker instead: export PRISM_KAFKA_BOOTSTRAP=host:port"
            + (" (the Tansu fallback is not implemented)" if settings.allow_tansu else "")
            + f"\nmvn said:\n{(result.stdout + result.stderr)[-2000:]}"
        )
    (libs / _COMPLETE).write_text("ok\n")
    return libs


def _java_cmd(settings: Settings, libs: Path, paths: KafkaPaths, *args: str) -> list[str]:
    log4j = resources.files("prism.stack") / "resources" / "log4j2.properties"
    return [
        "java", "-Xms128m", f"-Xmx{settings.kafka_heap}", "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={paths.logs}",
        "-cp", f"{libs}/*", *args,
    ]  # fmt: skip


def _format(settings: Settings, libs: Path, paths: KafkaPaths) -> None:
    cid_file = paths.root / "cluster.id"
    if not cid_file.is_file():
        write_text(cid_file, new_cluster_id())
    cmd = _java_cmd(
        settings, libs, paths, "kafka.tools.StorageTool", "format",
        "--cluster-id", cid_file.read_text().strip(), "--config", str(paths.config),
        "--ignore-formatted",
    )  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def start(settings: Settings, *, timeout: float = 90.0) -> str:
    """Start the broker (fresh ports; one retry on a port clash); return its bootstrap."""
    if shutil.which("java") is None:
        raise StackError("Java 17+ is needed for the local Kafka broker: install openjdk-17.")
    libs = ensure_jars(settings)
    paths = KafkaPaths.of(settings)
    for attempt in (1, 2):
        bootstrap = _launch(settings, libs, paths)
        try:
            wait_ready(bootstrap, paths, timeout=timeout)
            return bootstrap
        except StackError as e:
            stop(settings)
            if attempt == 2 or "Address already in use" not in str(e):
                raise
            log.warning("port clash starting Kafka; retrying with new ports")
    raise AssertionError("unreachable")


def _launch(settings: Settings, libs: Path, paths: KafkaPaths) -> str:
    broker_port, controller_port = free_port(), free_port()
    paths.data.mkdir(parents=True, exist_ok=True)
    write_text(
        paths.config,
        render_server_properties(
            broker_port=broker_port, controller_port=controller_port, data_dir=paths.data
        ),
    )
    _format(settings, libs, paths)
    env = dict(os.environ, KAFKA_LOG_DIRS=str(paths.logs))
    pid = process.start_detached(
        _java_cmd(settings, libs, paths, "kafka.Kafka", str(paths.config)),
        log_path=paths.console_log,
        marker=MARKER,
        env=env,
    )
    write_text(paths.pid_file, str(pid))
    bootstrap = f"127.0.0.1:{broker_port}"
    write_text(paths.bootstrap_file, bootstrap)
    return bootstrap


def wait_ready(bootstrap: str, paths: KafkaPaths, *, timeout: float) -> None:
    """Poll a metadata request until it succeeds, the process dies, or time runs out."""
    admin = probe_client(bootstrap)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.is_alive(read_int(paths.pid_file), MARKER):
            raise StackError(
                f"the Kafka broker exited during start-up; its log says:\n"
                f"{process.tail(paths.console_log)}\n{process.tail(paths.logs / 'server.log')}"
            )
        if metadata_ok(admin):
            return
        time.sleep(0.3)
    raise StackError(f"Kafka at {bootstrap} answered no metadata request within {timeout:.0f}s")


def probe_client(bootstrap: str) -> AdminClient:
    """An admin client for readiness polls; connection-refused noise is expected, so muted."""
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 0})


def metadata_ok(admin: AdminClient, timeout: float = 2.0) -> bool:
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # noqa: BLE001 - any client error means "not ready yet"
        return False


def running_pid(settings: Settings) -> int | None:
    pid = read_int(KafkaPaths.of(settings).pid_file)
    return pid if process.is_alive(pid, MARKER) else None


def stop(settings: Settings, *, timeout: float = 30.0) -> bool:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``)."""
    paths = KafkaPaths.of(settings)
    stopped = process.stop(read_int(paths.pid_file), MARKER, timeout=timeout)
    paths.pid_file.unlink(missing_ok=True)
    return stopped
