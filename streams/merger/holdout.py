"""The merger's holdout: labelled events of ``--holdout-topic`` into bounded reservoirs.

Why a topic of its own: the holdout must be events no node trained on, with
their labels, and a deployment already has both on Kafka. Whatever routes
events to the sites can route a share of its labelled ones (e.g. 1 in 50
after the label is known) to this topic instead, as ordinary ``Transaction``
/ ``SensorReading`` records with ``label`` set; the merger needs no join of
events and late labels, and the sample survives a restart because the topic
does. A record's schema names its task, so one topic can feed both.

The topic is assigned, never subscribed (no group, nothing committed): every
merger start reads it from the beginning into the reservoirs, up to the end
it has at start *before* the first round closes, so a restarted merger
judges with the same sample (:class:`models.holdout.Reservoir` is seeded);
later records are read between batches. Unlabelled records are skipped and
counted; undecodable ones go to ``dead-letter`` like any other bad input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from models.holdout import Reservoir
from runtime.errors import StackError
from schemas import Codec, SchemaError
from schemas.tasks import TASKS

log = logging.getLogger(__name__)

TASK_OF_SCHEMA = {task.schema: name for name, task in TASKS.items()}

#: a bad record: (message, reason code, reason)
OnBad = Callable[[Any, str, str], None]


def _log_bad(m: Any, reason_code: str, reason: str) -> None:
    log.warning(
        "holdout record skipped %s[%s]@%s: %s", m.topic(), m.partition(), m.offset(), reason
    )


class HoldoutFeed:
    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        *,
        codec: Codec,
        capacity: int,
        on_bad: OnBad | None = None,
        seed: int = 0,
    ) -> None:
        self.consumer, self.topic, self.codec = consumer, topic, codec
        self.on_bad: OnBad = on_bad or _log_bad  # the merger's loop sends them to dead-letter
        self.reservoirs = {task: Reservoir(capacity, seed=seed) for task in TASKS}
        self.unlabelled = 0

    def start(self, timeout_s: float = 60.0) -> int:
        """Assign every partition from the beginning and read to the end it has now."""
        try:
            meta = self.consumer.list_topics(self.topic, timeout=10.0).topics[self.topic]
        except KafkaException as e:
            raise StackError(f"cannot read the holdout topic {self.topic}: {e}") from e
        if meta.error is not None or not meta.partitions:
            raise StackError(
                f"the holdout topic {self.topic} is not there ({meta.error}): "
                "`prism topics create` makes it, or name another with --holdout-topic"
            )
        parts = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        ends = {}
        for tp in parts:
            _low, high = self.consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
            ends[tp.partition] = high
        self.consumer.assign(parts)
        at = {p: 0 for p in ends}
        deadline = time.monotonic() + timeout_s
        read = 0
        while any(at[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in self.consumer.consume(1000, timeout=0.5):
                if self._take(m):
                    read += 1
                if m.error() is None:
                    at[m.partition()] = m.offset() + 1
        log.info("holdout read topic=%s records=%d sample=%s", self.topic, read, self.sizes())
        return read

    def poll(self) -> int:
        """What arrived since: never waits (the loop's batches set the pace)."""
        return sum(self._take(m) for m in self.consumer.consume(1000, timeout=0))

    def close(self) -> None:
        self.consumer.close()

    def sizes(self) -> dict[str, int]:
        return {task: len(r) for task, r in self.reservoirs.items() if len(r)}

    def _take(self, m: Any) -> bool:
        err = m.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("holdout consumer error (librdkafka retries): %s", err)
            return False
        if m.value() is None:
            return False
        try:
            schema, record = self.codec.decode_any(m.value())
        except SchemaError as e:
            self.on_bad(m, e.reason_code, str(e))
            return False
        task = TASK_OF_SCHEMA.get(schema)
        if task is None:
            self.on_bad(m, "wrong-schema", f"the holdout takes labelled events, not {schema}")
            return False
        if record["label"] is None:
            self.unlabelled += 1
            return False
        self.reservoirs[task].offer(record["features"], record["label"])
        return True
