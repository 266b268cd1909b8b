"""Read-only queries of the registry, for users, dashboards and edge agents.

Works with the read-only ``prism-query`` ACL user: it issues only reads.

>>> RegistryClient("redis://127.0.0.1:1/0").keys.current("fraud-linear")
'prism:model:fraud-linear:current'
"""

from __future__ import annotations

import json
from typing import Any

import redis

from runtime.errors import NotFoundError, PrismError
from runtime.model_registry.keys import RegistryKeys
from schemas import Codec


class RegistryUnavailableError(PrismError):
    exit_code = 2


class RegistryClient:
    def __init__(self, url: str, *, codec: Codec | None = None, keys: RegistryKeys | None = None):
        self.codec = codec or Codec(max_bytes=64 * 1024 * 1024)
        self.keys = keys or RegistryKeys()
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def close(self) -> None:
        self._redis.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.ConnectionError as e:
            raise RegistryUnavailableError(f"cannot reach the Redis registry: {e}") from e

    def models(self) -> list[str]:
        """Names of every model with a current version, sorted."""
        return sorted(m.decode() for m in self._call(self._redis.smembers, self.keys.models))

    def get_model(self, name: str) -> dict[str, Any]:
        """The current GlobalModel record of ``name``; :class:`NotFoundError` if none."""
        data = self._call(self._redis.get, self.keys.current(name))
        if data is None:
            known = ", ".join(self.models()) or "none yet"
            raise NotFoundError(f"no model named {name!r} in the registry (known: {known})")
        return self.codec.decode(data, expected="GlobalModel")

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Versions of ``name``, newest first (bounded by the writer's history size)."""
        end = -1 if limit is None else limit - 1
        items = self._call(self._redis.lrange, self.keys.history(name), 0, end)
        if not items and not self._call(self._redis.exists, self.keys.current(name)):
            raise NotFoundError(f"no model named {name!r} in the registry")
        return [self.codec.decode(item, expected="GlobalModel") for item in items]

    def nodes(self) -> list[dict[str, Any]]:
        """Every node's latest record, sorted by node id."""
        ids = sorted(n.decode() for n in self._call(self._redis.smembers, self.keys.nodes))
        pipe = self._redis.pipeline(transaction=False)
        for node_id in ids:
            pipe.hgetall(self.keys.node(node_id))
        rows = []
        for raw in self._call(pipe.execute):
            row: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
            if not row:
                continue
            row["last_seen_ms"] = int(row["last_seen_ms"])
            row["last_sequence"] = int(row["last_sequence"])
            row["excluded"] = row["excluded"] == "1"
            row["metrics"] = json.loads(row.get("metrics") or "{}")
            row["meta"] = json.loads(row.get("meta") or "{}")  # absent in records before it
            rows.append(row)
        return rows
