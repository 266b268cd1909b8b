"""Scores handed to the producer and not yet acknowledged by the broker (#25, item 2).

A save moves the read position past every event scored so far. A score still
in librdkafka's queue then (the broker just went away, a flush that timed
out; records never expire) lived only in memory, and a kill -9 lost it (chaos
seed 1861302288). Purging the queue is no way out: after a leader change a
queued retry may already be on the surviving replicas. So each score waits
here until its delivery report; a save stores what is still here in the same
SQLite transaction as the position, and a restart sends exactly those again.
A record the broker took but had not confirmed then comes twice -- a repeat
only after a kill -9, which the project allows.
"""

from __future__ import annotations

__all__ = ["PendingScores"]


class PendingScores:
    """(key, value) of each unacknowledged score, oldest first, by a token per produce."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[bytes, bytes]] = {}
        self._next = 0

    def add(self, key: bytes, value: bytes) -> int:
        """Track a score about to be produced; its token for :meth:`settle`."""
        token = self._next
        self._next += 1
        self._items[token] = (key, value)
        return token

    def settle(self, token: int) -> None:
        """Its delivery report came (delivered, or sent to the offline file instead)."""
        self._items.pop(token, None)

    def snapshot(self) -> list[tuple[bytes, bytes]]:
        """What a save must keep: every score not yet settled, in the order produced."""
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)
