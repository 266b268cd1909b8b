"""Kafka client settings for every Prism producer and consumer, in one place.

Each service used to carry its own dict (the merger borrowed the central
learner's, the replay had a third): one module keeps what they share and
names what differs, so a fix to one (idempotence, a timeout) reaches all.

- :func:`producer_config` -- idempotent, ``acks=all``, lz4, batched, and it
  never gives up on a record while the broker is away (``message.timeout.ms``
  0): a checkpoint or an outbox waits for delivery instead.
- :func:`edge_producer_config` -- the same, reconnecting fast and quiet, with
  the agent's error callback (it tracks its link from it).
- :func:`replay_producer_config` -- a bulk loader: longer linger, deep queues,
  no compression; like the services it never expires a record
  (``message.timeout.ms`` 0), and ``prism replay`` bounds the wait itself
  (``--wait-broker``) so a replay still ends.
- :func:`consumer_config` -- a service's group consumer: manual commits and
  offset stores (Redis or the outbox holds the truth), range assignment,
  prefetch deep enough that a mini-batch comes from the local queue.

``security`` is :func:`runtime.kafka_security.kafka_security`'s SASL properties.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "consumer_config",
    "edge_producer_config",
    "producer_config",
    "replay_producer_config",
]


def producer_config(
    bootstrap: str, security: Mapping[str, str] | None = None, *, linger_ms: float = 5
) -> dict[str, Any]:
    """Central and merger producers: scores are many and small; a retry never duplicates.

    ``linger_ms``: a central worker passes its latency budget's share
    (:attr:`streams.central.batching.BatchPolicy.linger_ms`). No Nagle: with
    a 1 ms linger the requests are small, and Nagle's algorithm holds one back
    until the previous one is acknowledged -- score latency for nothing.
    """
    return {
        **(security or {}),
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": linger_ms,
        "batch.num.messages": 10_000,
        "compression.type": "lz4",
        "message.timeout.ms": 0,
        "socket.nagle.disable": True,
    }


def edge_producer_config(
    bootstrap: str,
    error_cb: Callable[[Any], None],
    security: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An edge agent's one producer (scores, summaries, forwarded events)."""
    return producer_config(bootstrap, security) | {
        "reconnect.backoff.max.ms": 1000,
        "error_cb": error_cb,
        "log_level": 3,
    }


def replay_producer_config(
    bootstrap: str, overrides: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``prism replay``'s producer (and the replay bench's bare one); ``overrides`` win."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "prism-replay",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 0,
    } | dict(overrides or {})


def consumer_config(
    bootstrap: str, group_id: str, client_id: str, *, security: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A central worker's or the merger's group consumer."""
    return {
        **(security or {}),
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        # a whole mini-batch should come from the local queue, not one fetch per call;
        # fetch.min.bytes 1: the broker answers a fetch as soon as one record is there,
        # so fetch.wait.max.ms (librdkafka's 500 ms) only bounds an *empty* long poll
        # and adds no latency (a larger min bytes would wait up to it: not here)
        "fetch.min.bytes": 1,
        "queued.min.messages": 100_000,
        "socket.nagle.disable": True,  # fetch and commit requests go out at once
    }
