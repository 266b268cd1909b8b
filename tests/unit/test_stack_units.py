from __future__ import annotations

from pathlib import Path

from prism.stack.kafka import new_cluster_id, render_server_properties
from prism.stack.redis_server import render_config
from prism.stack.state import read_env_file, write_env_file


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


def test_redis_config_has_read_only_user(tmp_path: Path) -> None:
    text = render_config(port=1, password="pw", query_password="qpw", data_dir=tmp_path)
    assert "requirepass pw" in text
    assert "user prism-query on >qpw ~* &* -@all +@read +@connection" in text
    assert "bind 127.0.0.1" in text
