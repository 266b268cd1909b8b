"""The merger's outbox: what it publishes is written to Redis first (issue #25, item 2).

A version number must name one content. When the merger produced a round's
globals before Redis had its state, a kill -9 during a Redis outage lost the
state behind versions already on the topic, and the restarted merger gave the
same numbers to other merges (chaos seed 1677549799). Now every record for
``global-model`` and ``lifecycle`` is written to Redis in the same transaction
as the state it belongs to, and produced only after that; a restart produces
whatever the outbox still holds, byte for byte, before anything new. The
outbox is emptied by the first transaction after a flush found every record
delivered, so a republish repeats identical records at worst.

An entry is framed as ``<i partition><H topic length><topic><I key length><key><value>``
(partition -1: by key).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["Outgoing", "decode", "encode"]

_HEAD = struct.Struct("<iH")
_KEY = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One record to produce: the topic, its key, value and partition (-1: by key)."""

    topic: str
    key: bytes
    value: bytes
    partition: int = -1


def encode(entry: Outgoing) -> bytes:
    topic = entry.topic.encode()
    return b"".join(
        (
            _HEAD.pack(entry.partition, len(topic)),
            topic,
            _KEY.pack(len(entry.key)),
            entry.key,
            entry.value,
        )
    )


def decode(data: bytes) -> Outgoing:
    partition, topic_len = _HEAD.unpack_from(data, 0)
    at = _HEAD.size
    topic = data[at : at + topic_len].decode()
    at += topic_len
    (key_len,) = _KEY.unpack_from(data, at)
    at += _KEY.size
    key = data[at : at + key_len]
    return Outgoing(topic, bytes(key), bytes(data[at + key_len :]), partition)
