"""Pure helpers of the local stack: config rendering, env files, logs, messages."""

from __future__ import annotations

import fcntl
import socket
import xml.etree.ElementTree as ET
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest

from prism.cli import build_parser
from prism.stack import ComponentStatus, StackInfo, process
from prism.stack.jars import COMPLETE, ensure_jars, libs_dir, maven_command, unreachable
from prism.stack.kafka import (
    TEST_JVM_FLAGS,
    KafkaPaths,
    Launch,
    java_command,
    new_cluster_id,
    render_server_properties,
)
from prism.stack.ports import free_port
from prism.stack.redis_server import render_config
from prism.stack.state import locked, read_env_file, write_env_file
from runtime.settings import Settings


def test_cluster_id_is_kafka_shaped() -> None:
    for _ in range(200):
        cid = new_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-") and "=" not in cid


def test_server_properties_bind_loopback_on_given_ports(tmp_path: Path) -> None:
    text = render_server_properties(broker_port=1234, controller_port=5678, data_dir=tmp_path)
    props = dict(line.split("=", 1) for line in text.splitlines() if line)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:1234,CONTROLLER://127.0.0.1:5678"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:5678"
    assert props["process.roles"] == "broker,controller"
    assert props["log.dirs"] == str(tmp_path)


def test_env_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    values = {"PRISM_KAFKA_BOOTSTRAP": "127.0.0.1:1", "PRISM_REDIS_URL": "redis://:a=b@h:2/0"}
    write_env_file(path, values)
    assert read_env_file(path) == values
    assert path.stat().st_mode & 0o077 == 0
    assert read_env_file(tmp_path / "missing.env") == {}


PASSWORDS = {"prism-query": "qpw", "prism-central": "cpw", "prism-merger": "mpw",
             "prism-edge": "epw"}  # fmt: skip


def _users(text: str) -> dict[str, str]:
    lines = [x.split(" ", 2) for x in text.splitlines() if x.startswith("user ")]
    return {name: rules for _user, name, rules in lines}


def test_redis_config_has_one_least_privilege_user_per_service(tmp_path: Path) -> None:
    text = render_config(port=1, password="pw", passwords=PASSWORDS, prefix="px", data_dir=tmp_path)
    assert "requirepass pw" in text and "bind 127.0.0.1" in text
    users = _users(text)
    assert set(users) == set(PASSWORDS)
    for user, password in PASSWORDS.items():
        assert users[user].startswith(f"on >{password} resetkeys ")
        assert users[user].endswith("-@dangerous") and "resetchannels" in users[user]
    assert "~* " in users["prism-query"]
    for user in ("prism-central", "prism-merger", "prism-edge"):  # keys under their prefix only
        keys = [w for w in users[user].split() if w.startswith("~")]
        assert keys and all(k.startswith("~px:") for k in keys), user
    assert "~px:checkpoint:*" in users["prism-central"] and "merger" not in users["prism-central"]
    assert "model" not in users["prism-central"]  # the merger alone writes the registry
    assert "~px:merger:*" in users["prism-merger"] and "checkpoint" not in users["prism-merger"]


def test_redis_config_is_loopback_persistent_and_readers_cannot_write(tmp_path: Path) -> None:
    text = render_config(port=7, password="pw", passwords=PASSWORDS, prefix="px", data_dir=tmp_path)
    assert "appendonly yes" in text and "appendfsync always" in text
    assert f"dir {tmp_path}" in text and "port 7" in text
    users = _users(text)
    for reader in ("prism-query", "prism-edge"):
        assert "+@write" not in users[reader] and "+@read" in users[reader]
    for writer in ("prism-central", "prism-merger"):
        assert "+@write" in users[writer] and "+@transaction" in users[writer]


def test_log_excerpt_keeps_the_cause_not_the_stack_frames(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old run: Address already in use\n")
    mark = process.log_sizes(log, tmp_path / "missing.log")
    assert mark[tmp_path / "missing.log"] == 0
    with log.open("a") as f:
        f.write("ERROR boom (kafka.Kafka$)\n\tat a.b.C(C.java:1)\n\t... 6 more\nCaused by: X\n")
    launch = Launch("127.0.0.1:1", 1, {log: mark[log]})
    new = launch.new_log_text()
    assert "old run" not in new and "boom" in new
    assert process.excerpt(new) == "ERROR boom (kafka.Kafka$)\nCaused by: X"
    assert process.excerpt("") == "(the log is empty)"
    assert process.read_since(tmp_path / "missing.log", 0) == ""


def test_java_command_uses_the_heap_setting_and_the_packaged_log4j(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, kafka_heap="384m")
    paths = KafkaPaths.of(settings)
    cmd = java_command(settings, tmp_path / "libs", paths, "kafka.Kafka", "x.properties")
    assert "-Xmx384m" in cmd and cmd[-2:] == ["kafka.Kafka", "x.properties"]
    assert cmd[cmd.index("-cp") + 1] == f"{tmp_path / 'libs'}/*"
    log4j = next(a for a in cmd if a.startswith("-Dlog4j2.configurationFile="))
    assert Path(log4j.split("=", 1)[1]).is_file()


def test_bench_jvm_drops_the_test_flags_and_keeps_the_heap(tmp_path: Path, monkeypatch) -> None:
    paths = KafkaPaths.of(Settings(state_dir=tmp_path))
    test = java_command(Settings(state_dir=tmp_path), tmp_path, paths, "kafka.Kafka")
    assert all(flag in test for flag in TEST_JVM_FLAGS)
    monkeypatch.setenv("PRISM_KAFKA_JVM", "bench")
    bench = Settings(state_dir=tmp_path, kafka_heap="384m")
    cmd = java_command(bench, tmp_path, paths, "kafka.Kafka")
    assert not set(TEST_JVM_FLAGS) & set(cmd)
    assert "-Xmx384m" in cmd and "-XX:+ExitOnOutOfMemoryError" in cmd


def test_packaged_pom_pins_kafka_logging_and_the_dependency_plugin() -> None:
    pom = ET.parse(str(resources.files("prism.stack") / "resources" / "pom.xml")).getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    assert pom.findtext("m:packaging", namespaces=ns) == "pom"
    props = {p.tag.split("}")[1]: p.text for p in pom.find("m:properties", ns)}
    deps = {
        d.findtext("m:artifactId", namespaces=ns): (d.findtext("m:version", namespaces=ns) or "")
        .replace("${kafka.version}", props["kafka.version"])
        .replace("${log4j.version}", props["log4j.version"])
        for d in pom.iter("{http://maven.apache.org/POM/4.0.0}dependency")
    }
    assert deps == {
        "kafka_2.13": "4.1.1",
        "slf4j-api": "1.7.36",
        "log4j-slf4j-impl": "2.24.3",
        "log4j-api": "2.24.3",
        "log4j-core": "2.24.3",
    }
    plugin = pom.find("m:build/m:plugins/m:plugin", ns)
    assert plugin.findtext("m:artifactId", namespaces=ns) == "maven-dependency-plugin"
    assert plugin.findtext("m:version", namespaces=ns).startswith("3.")


def test_log4j_config_keeps_the_readiness_line_and_writes_to_the_data_dir() -> None:
    text = (resources.files("prism.stack") / "resources" / "log4j2.properties").read_text()
    props = dict(
        (k.strip(), v.strip())
        for k, v in (line.split("=", 1) for line in text.splitlines() if "=" in line)
        if not k.startswith("#")
    )
    assert props["logger.raft.name"] == "kafka.server.KafkaRaftServer"
    assert props["logger.raft.level"] == "INFO"
    assert props["rootLogger.level"] == "WARN"
    assert props["appender.file.fileName"].startswith("${sys:kafka.logs.dir}")


def test_maven_command_and_cache_location(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    libs = libs_dir(settings)
    assert libs == tmp_path / "kafka-4.1.1" / "libs"
    cmd = maven_command(settings, libs)
    assert cmd[:3] == ["mvn", "-B", "-q"] and "dependency:copy-dependencies" in cmd
    assert "-DincludeScope=runtime" in cmd and f"-DoutputDirectory={libs}" in cmd


def test_a_complete_cache_is_used_without_maven(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    libs = libs_dir(settings)
    libs.mkdir(parents=True)
    (libs / COMPLETE).write_text("ok\n")
    assert ensure_jars(settings) == libs


def test_unreachable_maven_message_says_what_to_do() -> None:
    message = str(unreachable(Settings(), "mvn said: no route"))
    assert "Maven Central" in message and "export PRISM_KAFKA_BOOTSTRAP=" in message
    assert "no route" in message


def test_component_health() -> None:
    row = ComponentStatus("kafka", "127.0.0.1:1", None, None, True, "metadata ok")
    assert row.healthy  # a broker the user gave us has no pid of ours
    assert not replace(row, alive=False).healthy  # ours, but its process died
    assert not replace(row, reachable=False).healthy


def test_stack_info_env_lines_are_the_three_addresses() -> None:
    info = StackInfo("127.0.0.1:1", "redis://:p@127.0.0.1:2/0", "redis://q:r@127.0.0.1:2/0")
    assert list(info.env_lines()) == [
        "PRISM_KAFKA_BOOTSTRAP",
        "PRISM_REDIS_URL",
        "PRISM_REDIS_QUERY_URL",
    ]


def test_stack_commands_ignore_the_stack_file() -> None:
    parser = build_parser()
    for action in ("up", "down", "status"):
        assert parser.parse_args(["stack", action]).use_stack_file is False
    assert getattr(parser.parse_args(["topics", "list"]), "use_stack_file", True) is True
    assert parser.parse_args(["topics", "create", "--partitions", "5"]).partitions == 5


def test_state_lock_is_exclusive(tmp_path: Path) -> None:
    lock = tmp_path / "stack.lock"
    with locked(lock), open(lock) as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released after the block


def test_free_ports_are_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
