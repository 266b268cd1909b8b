"""Every topic of DESIGN.md, created idempotently through the Kafka admin API."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from runtime.errors import StackError
from runtime.kafka_security import KafkaAuth, check_login, unanswered_hint
from runtime.settings import Settings

# Logical name -> extra topic config. global-model keeps only the latest per model.
TOPICS: dict[str, dict[str, str]] = {
    "transactions": {},
    "sensor-readings": {},
    "labels": {},
    "scores": {},
    "model-updates": {},
    "global-model": {"cleanup.policy": "compact"},
    "dead-letter": {},
    "holdout": {},  # labelled events held back for the merger's quality gate
    "lifecycle": {},  # versions held back (and other lifecycle decisions), with reasons
    # secure aggregation (docs/secure-aggregation.md): the merger's phases, the nodes' steps
    "secagg-rounds": {},
    "secagg-keys": {},
    "secagg-shares": {},
    "secagg-masked": {},
    "secagg-unmask": {},
    "secagg-confirm": {},
    "secagg-routed": {},  # merger -> one node, in the node's own partition
}
#: topics whose partition count is a setting of its own (not ``partitions``)
OWN_PARTITIONS = {"secagg-routed": "secagg_routed_partitions"}


def create_topics(
    settings: Settings,
    *,
    bootstrap: str,
    partitions: int | None = None,
    names: Iterable[str] = TOPICS,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Create the topics; return ``full name -> "created" | "exists"``."""
    auth = KafkaAuth.from_settings(settings)
    check_login(bootstrap, auth)
    admin = AdminClient({**auth.librdkafka(), "bootstrap.servers": bootstrap})
    new = [
        NewTopic(
            settings.topic(name),
            num_partitions=(
                getattr(settings, OWN_PARTITIONS[name])
                if name in OWN_PARTITIONS
                else partitions or settings.partitions
            ),
            replication_factor=settings.replication_factor,
            config=TOPICS.get(name, {}),
        )
        for name in names
    ]
    outcome: dict[str, str] = {}
    for topic, future in admin.create_topics(new, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            outcome[topic] = "created"
        except KafkaException as e:
            if e.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise StackError(
                    f"could not create topic {topic}: {e.args[0].str()}{unanswered_hint(auth)}"
                ) from e
            outcome[topic] = "exists"
    return outcome


def list_topics(
    bootstrap: str, timeout: float = 10.0, *, security: dict[str, str] | None = None
) -> dict[str, int]:
    """Topic name -> partition count (internal topics left out)."""
    admin = AdminClient({**(security or {}), "bootstrap.servers": bootstrap})
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as e:
        raise StackError(f"Kafka at {bootstrap} did not answer: {e}") from e
    return {
        name: len(t.partitions) for name, t in metadata.topics.items() if not name.startswith("__")
    }
