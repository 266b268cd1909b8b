"""Kafka authentication (SASL/SCRAM) for every Kafka client Prism makes.

One place turns the ``PRISM_KAFKA_SECURITY_PROTOCOL`` / ``PRISM_KAFKA_SASL_*``
settings into client configuration, so the central learner, the merger, the
edge agents, replay, the topic admin and the CLI's readers authenticate the
same way. It lives in ``prism/`` because both ``streams/`` and
``edge_agents/`` import it and must not import each other.

Settings are checked when a client is about to be built: SASL without a
user or password, or a SASL user with the PLAINTEXT protocol, is a usage
error that names the variable to set -- not a client that connects and then
fails with a less clear "disconnected" from librdkafka. The password never
appears in ``repr`` or in :meth:`KafkaAuth.describe` (which services log).

Examples
--------
>>> from runtime.settings import Settings
>>> KafkaAuth.from_settings(Settings()).librdkafka()
{}
>>> auth = KafkaAuth("SASL_PLAINTEXT", "SCRAM-SHA-512", "prism", "s3cret")
>>> sorted(auth.librdkafka().items())[:3]
[('sasl.mechanism', 'SCRAM-SHA-512'), ('sasl.password', 's3cret'), ('sasl.username', 'prism')]
>>> auth.describe(), "s3cret" in repr(auth)
('SASL_PLAINTEXT/SCRAM-SHA-512 user=prism', False)
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import StackError, UsageError
from runtime.settings import Settings

__all__ = [
    "MECHANISMS",
    "PROTOCOLS",
    "KafkaAuth",
    "KafkaAuthError",
    "check_login",
    "kafka_security",
    "unanswered_hint",
]

PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True)
class KafkaAuth:
    """How a client authenticates to Kafka; PLAINTEXT (no authentication) by default."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UsageError(
                f"PRISM_KAFKA_SECURITY_PROTOCOL={self.protocol!r}: choose {', '.join(PROTOCOLS)}"
            )
        if self.mechanism not in MECHANISMS:
            raise UsageError(
                f"PRISM_KAFKA_SASL_MECHANISM={self.mechanism!r}: choose {', '.join(MECHANISMS)}"
            )
        if self.sasl and not (self.username and self.password):
            raise UsageError(
                f"PRISM_KAFKA_SECURITY_PROTOCOL={self.protocol} needs PRISM_KAFKA_SASL_USERNAME "
                "and PRISM_KAFKA_SASL_PASSWORD"
            )
        if not self.sasl and (self.username or self.password):
            raise UsageError(
                "PRISM_KAFKA_SASL_USERNAME/PASSWORD are set but PRISM_KAFKA_SECURITY_PROTOCOL "
                "is PLAINTEXT: set it to SASL_PLAINTEXT or SASL_SSL (or unset the SASL user)"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaAuth:
        password = settings.kafka_sasl_password
        return cls(
            protocol=settings.kafka_security_protocol,
            mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_sasl_username or None,
            password=password.get_secret_value() if password else None,
        )

    @property
    def sasl(self) -> bool:
        return self.protocol != "PLAINTEXT"

    def librdkafka(self) -> dict[str, str]:
        """The confluent-kafka (librdkafka) properties; empty for PLAINTEXT."""
        if not self.sasl:
            return {}
        return {
            "security.protocol": self.protocol,
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username or "",
            "sasl.password": self.password or "",
        }

    def faust_credentials(self) -> Any:
        """``broker_credentials`` for a Faust app (aiokafka underneath); None for PLAINTEXT."""
        if not self.sasl:
            return None
        import faust  # the edge agents and the CLI must not pay for Faust

        context = ssl.create_default_context() if self.protocol == "SASL_SSL" else None
        return faust.SASLCredentials(
            username=self.username,
            password=self.password,
            mechanism=self.mechanism,
            ssl_context=context,
        )

    def describe(self) -> str:
        """For logs: protocol, mechanism and user; never the password."""
        if not self.sasl:
            return "PLAINTEXT"
        return f"{self.protocol}/{self.mechanism} user={self.username}"


def kafka_security(settings: Settings) -> dict[str, str]:
    """Shorthand: the librdkafka properties every client built from ``settings`` adds."""
    return KafkaAuth.from_settings(settings).librdkafka()


class KafkaAuthError(StackError):
    """The broker refused this client's SASL login (wrong user, password or mechanism)."""


def check_login(bootstrap: str, auth: KafkaAuth, *, timeout: float = 15.0) -> None:
    """Fail fast when the broker refuses our SASL login; do nothing for PLAINTEXT.

    librdkafka retries a refused login forever, so without this a service with a
    wrong password would sit idle and log the same line every 300 ms. An
    unreachable broker is *not* an error here: services wait for it as before.
    """
    if not auth.sasl:
        return
    from confluent_kafka import KafkaError, KafkaException, Producer

    refused: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            refused.append(err.str())

    config = {**auth.librdkafka(), "bootstrap.servers": bootstrap, "error_cb": on_error}
    probe = Producer({**config, "log_level": 0})
    deadline = time.monotonic() + timeout
    while not refused and time.monotonic() < deadline:
        try:
            probe.list_topics(timeout=1.0)
            return
        except KafkaException:
            probe.poll(0.2)
    if refused:
        raise KafkaAuthError(
            f"Kafka at {bootstrap} refused the login of {auth.describe()}: {refused[0]} -- "
            "check PRISM_KAFKA_SASL_USERNAME, PRISM_KAFKA_SASL_PASSWORD and "
            "PRISM_KAFKA_SASL_MECHANISM"
        )


def unanswered_hint(auth: KafkaAuth) -> str:
    """What to add to a 'Kafka did not answer' message when no SASL is configured."""
    if auth.sasl:
        return ""
    return (
        " (if the broker requires authentication, set PRISM_KAFKA_SECURITY_PROTOCOL and "
        "PRISM_KAFKA_SASL_USERNAME / PRISM_KAFKA_SASL_PASSWORD)"
    )
