"""SASL settings -> client configuration, checked without a broker.

The end-to-end proof (a real SCRAM broker, every service logging in, wrong
passwords refused) is tests/reliability/test_kafka_sasl.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from prism.stack import kafka as local_kafka
from runtime.errors import StackError, UsageError
from runtime.kafka_security import KafkaAuth, check_login, kafka_security
from runtime.settings import Settings

SECRET = "pw-Very-Secret-123"
SASL = {
    "PRISM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "PRISM_KAFKA_SASL_USERNAME": "prism",
    "PRISM_KAFKA_SASL_PASSWORD": SECRET,
}


@pytest.fixture
def sasl_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in SASL.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_plaintext_by_default_adds_nothing() -> None:
    auth = KafkaAuth.from_settings(Settings())
    assert (auth.sasl, auth.librdkafka(), auth.faust_credentials()) == (False, {}, None)
    assert auth.describe() == "PLAINTEXT"


def test_sasl_settings_become_librdkafka_properties_and_never_show_the_password(
    sasl_settings: Settings,
) -> None:
    assert kafka_security(sasl_settings) == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "prism",
        "sasl.password": SECRET,
    }
    auth = KafkaAuth.from_settings(sasl_settings)
    for text in (repr(auth), str(auth), auth.describe(), repr(sasl_settings)):
        assert SECRET not in text


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PRISM_KAFKA_SASL_PASSWORD": ""}, "needs PRISM_KAFKA_SASL_USERNAME and"),
        ({"PRISM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "set it to SASL_PLAINTEXT or SASL_SSL"),
        ({"PRISM_KAFKA_SECURITY_PROTOCOL": "SSL"}, "choose PLAINTEXT, SASL_PLAINTEXT, SASL_SSL"),
        ({"PRISM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "choose SCRAM-SHA-512, SCRAM-SHA-256"),
    ],
)
def test_settings_that_cannot_log_in_are_usage_errors_naming_the_variable(
    sasl_settings: Settings, monkeypatch: pytest.MonkeyPatch, env: dict, says: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=says) as info:
        KafkaAuth.from_settings(Settings())
    assert SECRET not in str(info.value)


def test_faust_gets_the_same_login(sasl_settings: Settings) -> None:
    creds = KafkaAuth.from_settings(sasl_settings).faust_credentials()
    assert (creds.username, creds.password) == ("prism", SECRET)
    assert (creds.protocol.value, creds.mechanism.value) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    tls = KafkaAuth("SASL_SSL", "SCRAM-SHA-256", "u", "p").faust_credentials()
    assert (tls.protocol.value, tls.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-256")
    assert tls.ssl_context is not None


def test_every_client_config_builder_carries_the_login_and_keeps_its_own_settings(
    sasl_settings: Settings,
) -> None:
    from runtime.kafka_config import consumer_config, edge_producer_config, producer_config
    from runtime.kafka_config import replay_producer_config as replay_producer

    security = kafka_security(sasl_settings)
    built = {
        "central producer": producer_config("b:1", security),
        "central/merger consumer": consumer_config("b:1", "g", "c", security=security),
        "edge producer": edge_producer_config("b:1", lambda err: None, security),
        "replay producer": replay_producer("b:1", security),
    }
    for name, config in built.items():
        assert config.items() >= security.items(), name
        assert config["bootstrap.servers"] == "b:1", name
    assert built["central producer"]["enable.idempotence"] is True
    assert built["central/merger consumer"]["enable.auto.commit"] is False


def test_login_check_is_a_no_op_without_sasl() -> None:
    began = time.monotonic()
    check_login("127.0.0.1:1", KafkaAuth())  # nothing listens there: no connection is tried
    assert time.monotonic() - began < 0.5


def test_local_broker_sasl_listener_and_format_time_users(tmp_path: Path) -> None:
    sasl = local_kafka.BrokerSasl({"prism": SECRET})
    text = local_kafka.render_server_properties(
        broker_port=9000, controller_port=9001, data_dir=tmp_path, sasl=sasl
    )
    lines = set(text.splitlines())
    assert "listeners=SASL_PLAINTEXT://127.0.0.1:9000,CONTROLLER://127.0.0.1:9001" in lines
    assert (
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT" in lines
    )
    assert "sasl.enabled.mechanisms=SCRAM-SHA-512" in lines
    assert not any(line.startswith("listeners=PLAINTEXT") for line in lines)
    assert sasl.format_args()[-2:] == [
        "--add-scram",
        f"SCRAM-SHA-512=[name=prism,password={SECRET}]",
    ]
    assert sasl.format_args()[0:2][0] == "--add-scram" and "name=broker" in sasl.format_args()[1]
    assert SECRET not in repr(sasl) and sasl.broker_password not in repr(sasl)
    assert sasl.client_security("prism")["sasl.password"] == SECRET
    with pytest.raises(StackError, match="letters, digits"):
        local_kafka.BrokerSasl({"prism": "has,comma]"})
