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


class DeadLetters:
    """Encodes ``DeadLetter`` records and produces them with the service's producer."""

    def __init__(
        self, producer: Any, topic: str, *, service: str, codec: Codec, telemetry: Telemetry
    ) -> None:
        self.producer, self.topic, self.service = producer, topic, service
        self.codec, self.telemetry = codec, telemetry

    def _encode(self, record: dict[str, Any]) -> bytes:
        """The dead letter; an oversized record keeps the head of its value (and says so)."""
        try:
            return self.codec.encode("DeadLetter", record)
        except SchemaError as e:
            value, key = record["value"] or b"", record["key"]
            if e.reason_code != "oversized":
                raise
            keep = max(self.codec.max_bytes - 2048, 0)
            record = record | {
                "key": key[:256] if key is not None else None,
                "value": value[:keep],
                "reason": f"{record['reason'][:500]} [value cut to its first {keep} of "
                f"{len(value)} bytes to fit max_bytes]",
            }
            return self.codec.encode("DeadLetter", record)

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
