"""The node's line to Kafka: one idempotent producer, and whether the broker answers.

An edge node is often cut off. librdkafka keeps reconnecting by itself; what
the agent needs is a yes/no it can act on per event:

- down: the producer's error callback reports every broker down
  (``_ALL_BROKERS_DOWN``), a delivery fails, or the queue is full;
- up again: a background probe (a metadata request every ``probe_every_s``
  while down) gets an answer.

Messages use ``message.timeout.ms=0`` (never expire) with idempotence and
acks=all: what was handed to the producer before the cut is delivered when
the broker is back, once, in order. While down, nothing new is handed over:
scores go to a local file, raw events and summaries wait in SQLite.

A node can also be taken off the line by hand: while ``cut_file`` (the
agent's ``STATE/link-cut``) exists the link is down as if the network were
gone -- a maintenance switch, and how ``make chaos`` cuts one edge off
without stopping the broker for everyone. Only the producer side is cut;
the global-model feed keeps reading.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient

from runtime.kafka_config import edge_producer_config

log = logging.getLogger(__name__)

__all__ = ["Link"]


class Link:
    """Producer + connectivity flag shared by the score sink, sender and forwarder."""

    def __init__(
        self,
        bootstrap: str,
        *,
        probe_every_s: float = 1.0,
        security: Mapping[str, str] | None = None,
        cut_file: Path | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.cut_file = cut_file
        self.producer = Producer(edge_producer_config(bootstrap, self._on_error, security))
        self._admin = AdminClient(
            {
                **(security or {}),
                "bootstrap.servers": bootstrap,
                "socket.timeout.ms": 2000,
                "log_level": 0,
            }
        )
        self._up = threading.Event()
        self._stop = threading.Event()
        self.transitions = 0
        self.probe_every_s = probe_every_s
        if self._probe(timeout=5.0):
            self._up.set()
        else:
            log.warning("kafka unreachable at start bootstrap=%s: scoring locally", bootstrap)
        self._thread = threading.Thread(target=self._watch, name="edge-link-probe", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def mark_down(self, why: str) -> None:
        if self._up.is_set():
            self._up.clear()
            self.transitions += 1
            log.warning("link down reason=%r: scores to the local file, summaries wait", why)

    def close(self, timeout: float = 10.0) -> int:
        """Stop probing and flush; returns messages still undelivered."""
        self._stop.set()
        remaining = self.producer.flush(timeout if self.up else 0.5)
        self._thread.join(timeout=3)
        return remaining

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.mark_down(err.str())
        elif err.fatal():
            log.error("fatal producer error: %s", err.str())
            self.mark_down(err.str())

    def _cut(self) -> bool:
        return self.cut_file is not None and self.cut_file.exists()

    def _probe(self, timeout: float) -> bool:
        if self._cut():
            return False
        try:
            return bool(self._admin.list_topics(timeout=timeout).brokers)
        except Exception:  # noqa: BLE001 - any client error means "still down"
            return False

    def _watch(self) -> None:
        while not self._stop.wait(self.probe_every_s):
            if self._up.is_set() and self._cut():
                self.mark_down(f"link cut by {self.cut_file}")
            elif not self._up.is_set() and self._probe(timeout=2.0):
                self._up.set()
                self.transitions += 1
                log.info("link up again bootstrap=%s", self.bootstrap)
