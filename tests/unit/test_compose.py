"""docker-compose.yml cannot be run here (no Docker engine, no compose plugin),
so its structure is validated: the services, images, healthchecks and the
``service_healthy`` ordering the users rely on."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_kafka_is_official_kraft_image_with_healthcheck() -> None:
    kafka = _compose()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert kafka["healthcheck"]["test"]


def test_redis_has_password_persistence_and_query_user() -> None:
    redis = _compose()["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = " ".join(redis["command"])
    assert "--requirepass" in command
    assert "--appendonly yes" in command
    assert "prism-query on" in command and "+@read" in command and "-@all" in command
    assert redis["healthcheck"]["test"]


def test_every_dependency_waits_for_health_not_sleep() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep, condition in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}
        command = " ".join(map(str, service.get("command") or []))
        assert "sleep" not in command, f"{name} uses a sleep loop"


def test_services_built_from_the_one_dockerfile() -> None:
    services = _compose()["services"]
    built = [s for s in services.values() if "build" in s]
    assert built, "no Prism service is built"
    assert (ROOT / "Dockerfile").is_file()
    assert all(s["build"] == "." for s in built)
