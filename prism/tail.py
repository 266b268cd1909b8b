"""Read any Prism topic as decoded records: what ``prism topics tail`` prints.

Partitions are assigned, not subscribed: a tail joins no consumer group,
commits nothing and moves no service's offsets. Where it starts is fixed in
:meth:`Tail.setup` (each partition's beginning, or its end at that moment),
so every record produced after setup is read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from prism.wire_json import render_key, render_value
from runtime.errors import NotFoundError, StackError
from schemas import Codec


def resolve_topic(name: str, prefix: str, existing: set[str]) -> str:
    """``name`` as given when that topic exists, else with the topic prefix.

    >>> resolve_topic("scores", "prism.", {"prism.scores"})
    'prism.scores'
    >>> resolve_topic("prism.scores", "prism.", {"prism.scores"})
    'prism.scores'
    """
    for candidate in (name, prefix + name):
        if candidate in existing:
            return candidate
    ours = sorted(t for t in existing if t.startswith(prefix))
    known = ", ".join(t.removeprefix(prefix) for t in ours) or "none: run `prism topics create`"
    raise NotFoundError(f"no topic {name!r} or {prefix + name!r} (under {prefix!r}: {known})")


class Tail:
    """One topic's records, decoded, in arrival order per partition."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        prefix: str = "",
        security: dict[str, str] | None = None,
        from_beginning: bool = False,
        codec: Codec | None = None,
    ) -> None:
        self.requested, self.prefix = topic, prefix
        self.from_beginning = from_beginning
        self.codec = codec or Codec(max_bytes=64 * 1024 * 1024)
        self.topic = ""
        self._config = {
            **(security or {}),
            "bootstrap.servers": bootstrap,
            "group.id": f"prism-tail-{uuid.uuid4().hex[:8]}",  # never committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "client.id": "prism-tail",
        }
        self._consumer: Consumer | None = None

    def setup(self, timeout: float = 10.0) -> Tail:
        """Find the topic and fix each partition's start offset."""
        consumer = Consumer(self._config)
        self._consumer = consumer
        try:
            meta = consumer.list_topics(timeout=timeout)
            self.topic = resolve_topic(self.requested, self.prefix, set(meta.topics))
            parts = sorted(meta.topics[self.topic].partitions)
            assigned = []
            for p in parts:
                if self.from_beginning:
                    offset = OFFSET_BEGINNING
                else:
                    offset = consumer.get_watermark_offsets(
                        TopicPartition(self.topic, p), timeout=timeout
                    )[1]
                assigned.append(TopicPartition(self.topic, p, offset))
            consumer.assign(assigned)
        except KafkaException as e:
            self.close()
            raise StackError(f"Kafka at {self._config['bootstrap.servers']}: {e}") from e
        except NotFoundError:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def records(self, *, limit: int | None = None, idle_s: float | None = None) -> Iterator[dict]:
        """Decoded records until ``limit`` of them, or ``idle_s`` seconds without one."""
        if self._consumer is None:
            raise RuntimeError("Tail.setup() was not called")
        count, last = 0, time.monotonic()
        while limit is None or count < limit:
            msg = self._consumer.poll(0.2)
            if msg is None:
                if idle_s is not None and time.monotonic() - last >= idle_s:
                    return
                continue
            if msg.error():
                if msg.error().fatal():
                    raise StackError(f"Kafka: {msg.error().str()}")
                continue  # e.g. partition EOF notices
            last = time.monotonic()
            count += 1
            yield self.render(msg)

    def render(self, msg: Any) -> dict[str, Any]:
        ts_type, ts = msg.timestamp()
        return {
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "timestamp_ms": ts if ts_type else None,
            **render_key(msg.key()),
            **render_value(self.codec, msg.value()),
        }
