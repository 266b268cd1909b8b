"""Operator controls in the registry: rollback requests, quarantined versions, node pins.

Written by ``prism models rollback | quarantine | pin`` with a Redis user
that may write the registry (the merger's, ``prism-merger``); read by the
merger (rollbacks, quarantine) and by edge agents (quarantine, their pin)
with read-only users. Redis is the place because it outlives every process:
a quarantine holds across merger restarts, and a pin across edge restarts.
A read-only user's write is refused by the Redis ACL (NOPERM); that becomes
:class:`~runtime.errors.PermissionRefusedError` with what to do about it.

Keys (:class:`RegistryKeys`): ``model:{name}:quarantine`` (set of versions),
``model:{name}:rollback`` (hash: to, reason, at), ``pins`` (hash: node id ->
version).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from runtime.errors import PermissionRefusedError
from runtime.model_registry.client import RegistryUnavailableError
from runtime.model_registry.keys import RegistryKeys

__all__ = ["LifecycleControls", "RollbackRequest"]


@dataclass(frozen=True)
class RollbackRequest:
    to: int
    reason: str = ""
    at_ms: int = 0


class LifecycleControls:
    """Reads and writes of the operator controls on one Redis connection."""

    def __init__(self, client: redis.Redis, keys: RegistryKeys | None = None) -> None:
        self.client = client
        self.keys = keys or RegistryKeys()

    @classmethod
    def connect(cls, url: str, keys: RegistryKeys | None = None) -> LifecycleControls:
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5), keys)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.exceptions.NoPermissionError as e:
            raise PermissionRefusedError(
                f"the Redis user may not change the registry ({e}): operator commands need a "
                "user that may write it, e.g. the merger's (prism-merger) URL in PRISM_REDIS_URL"
            ) from e
        except redis.ConnectionError as e:
            raise RegistryUnavailableError(f"cannot reach the Redis registry: {e}") from e

    # -- operator writes ---------------------------------------------------------
    def request_rollback(self, name: str, to: int, reason: str = "") -> None:
        """Ask the merger to republish version ``to`` of ``name``; a newer request replaces
        one it has not handled yet."""
        mapping = {"to": str(to), "reason": reason, "at": str(int(time.time() * 1000))}
        key = self.keys.rollback(name)
        with self.client.pipeline(transaction=True) as tx:
            tx.delete(key)
            tx.hset(key, mapping=mapping)
            self._call(tx.execute)

    def quarantine(self, name: str, version: int) -> None:
        self._call(self.client.sadd, self.keys.quarantine(name), str(version))

    def pin(self, node_id: str, version: int) -> None:
        self._call(self.client.hset, self.keys.pins, node_id, str(version))

    def unpin(self, node_id: str) -> bool:
        return bool(self._call(self.client.hdel, self.keys.pins, node_id))

    # -- reads ---------------------------------------------------------------------
    def quarantined(self, name: str) -> set[int]:
        return {int(v) for v in self._call(self.client.smembers, self.keys.quarantine(name))}

    def rollback(self, name: str) -> RollbackRequest | None:
        raw = self._call(self.client.hgetall, self.keys.rollback(name))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return RollbackRequest(int(fields["to"]), fields.get("reason", ""), int(fields["at"]))

    def pin_of(self, node_id: str) -> int | None:
        raw = self._call(self.client.hget, self.keys.pins, node_id)
        return None if raw is None else int(raw)

    def pins(self) -> dict[str, int]:
        raw = self._call(self.client.hgetall, self.keys.pins)
        return {k.decode(): int(v) for k, v in raw.items()}

    def close(self) -> None:
        self.client.close()
