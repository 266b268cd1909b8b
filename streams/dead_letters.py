"""The dead-letter topic: a record no service could use, kept whole with the reason.

Every stream service routes bad input here instead of dying on it (the
per-event error boundary faust-streaming needs: an exception escaping an
agent silently stops it committing, issues #175/#523).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from schemas import Codec, SchemaError
from streams.telemetry import Telemetry

log = logging.getLogger(__name__)

#: Under librdkafka's default ``message.max.bytes`` (1,000,000) with room for the envelope:
#: a value the broker took (up to ~1 MiB) could otherwise not be produced as a dead letter.
MAX_DEAD_LETTER_BYTES = 900_000


class DeadLetters:
    """Encodes ``DeadLetter`` records and produces them with the service's producer."""

    def __init__(
        self, producer: Any, topic: str, *, service: str, codec: Codec, telemetry: Telemetry
    ) -> None:
        self.producer, self.topic, self.service = producer, topic, service
        self.codec, self.telemetry = codec, telemetry

    def _encode(self, record: dict[str, Any]) -> bytes:
        """The dead letter; one too big to send keeps the head of its value (and says so)."""
        limit = min(self.codec.max_bytes, MAX_DEAD_LETTER_BYTES)
        try:
            data = self.codec.encode("DeadLetter", record)
            if len(data) <= limit:
                return data
        except SchemaError as e:
            if e.reason_code != "oversized":
                raise
        value, key = record["value"] or b"", record["key"]
        keep = max(limit - 2048, 0)
        record = record | {
            "key": key[:256] if key is not None else None,
            "value": value[:keep],
            "reason": f"{record['reason'][:500]} [value cut to its first {keep} of "
            f"{len(value)} bytes to fit a dead letter]",
        }
        return self.codec.encode("DeadLetter", record)

    def send_message(self, m: Any, reason_code: str, reason: str) -> None:
        """Dead-letter a consumed Kafka message as it was read (topic, position, key, value)."""
        self.send(
            topic=m.topic(),
            partition=m.partition(),
            offset=m.offset(),
            key=m.key(),
            value=m.value(),
            reason_code=reason_code,
            reason=reason,
        )

    def send(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason_code: str,
        reason: str,
    ) -> None:
        record = {
            "topic": topic,
            "partition": int(partition),
            "offset": int(offset),
            "key": key,
            "value": value,
            "reason_code": reason_code,
            # a reason may quote the bad text (a lone surrogate): never fail on it here
            "reason": reason.encode("utf-8", "backslashreplace").decode("utf-8"),
            "service": self.service,
            "failed_at": int(time.time() * 1000),
        }
        self.producer.produce(self.topic, self._encode(record), key=key)
        self.telemetry.dead_letters.labels(self.service, reason_code).inc()
        log.warning(
            "dead letter service=%s topic=%s partition=%s offset=%s reason_code=%s reason=%r",
            self.service,
            topic,
            partition,
            offset,
            reason_code,
            reason,
        )
