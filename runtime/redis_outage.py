"""Riding out a Redis restart: which errors mean "Redis is away", and how services wait.

Redis holds the truth of every service (checkpoints, merger state, the
registry), so a service never writes around it and never drops what it
failed to write: it keeps the state in memory and writes it whole once Redis
answers again. Two shapes of waiting:

- :class:`RedisBackoff` for loops that can keep working meanwhile (the central
  worker scores on, the merger merges on): the write is tried again after a
  growing pause, and the outage is logged when it starts and when it ends;
- :func:`wait_for` for steps that cannot go on without Redis (restoring a
  partition's checkpoint, the last checkpoint before leaving): retried with
  backoff up to a limit, then one clear error.

``redis.BusyLoadingError`` (a restarted server still replaying its AOF) is a
``ConnectionError``, so it counts as away too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from runtime.errors import StackError

log = logging.getLogger(__name__)

REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError)
T = TypeVar("T")


class RedisUnavailable(StackError):
    """Redis did not come back within the limit of a step that cannot go on without it."""


def one_reconnect() -> Retry:
    """A client's own retry policy: one immediate reconnect (a pooled connection
    the restarted server closed), no sleeping inside a call — the services pace
    their retries themselves and keep working between them."""
    return Retry(NoBackoff(), 1)


def service_client(url: str) -> redis.Redis:
    """The Redis client of a long-running service: bounded timeouts, :func:`one_reconnect`."""
    return redis.Redis.from_url(
        url, socket_timeout=10, socket_connect_timeout=5, retry=one_reconnect()
    )


def wait_for(
    call: Callable[[], T],
    *,
    what: str,
    limit_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, retried with backoff (0.2 s doubling to 5 s) while Redis is away."""
    deadline = clock() + limit_s
    delay = 0.2
    while True:
        try:
            return call()
        except REDIS_AWAY as e:
            if clock() + delay > deadline:
                raise RedisUnavailable(
                    f"Redis did not answer for {limit_s:.0f} s while {what}: {e} "
                    "(state is safe in the last checkpoint; restart once Redis is back)"
                ) from e
            log.warning("redis unavailable while=%r retry_in=%.1fs error=%s", what, delay, e)
            sleep(delay)
            delay = min(delay * 2, 5.0)


class RedisBackoff:
    """For a loop that keeps working while Redis is away: when to try its write again."""

    def __init__(
        self,
        what: str,
        *,
        first_s: float = 0.5,
        cap_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.first_s, self.cap_s, self._clock = what, first_s, cap_s, clock
        self.since: float | None = None  # when the current outage began
        self.failures = 0
        self._delay = first_s
        self._retry_at = float("-inf")

    def ready(self) -> bool:
        """Time to try the write (always, unless a recent try failed)."""
        return self._clock() >= self._retry_at

    def failed(self, error: Exception) -> None:
        now = self._clock()
        if self.since is None:
            self.since = now
            log.warning("redis unavailable: %s postponed, kept in memory (%s)", self.what, error)
        self.failures += 1
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, self.cap_s)

    def succeeded(self) -> None:
        if self.since is not None:
            log.info(
                "redis back: %s written after %.1f s (%d tries failed)",
                self.what,
                self._clock() - self.since,
                self.failures,
            )
        self.since, self.failures, self._delay = None, 0, self.first_s
        self._retry_at = float("-inf")
