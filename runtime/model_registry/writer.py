"""Writes to the registry: one transaction per published model."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from runtime.model_registry.keys import RegistryKeys
from schemas import Codec


@dataclass(frozen=True)
class NodeRecord:
    """What the registry remembers of a node after its latest update."""

    node_id: str
    last_seen_ms: int
    last_sequence: int
    model_name: str
    tier: str = "edge"
    region: str | None = None
    excluded: bool = False
    reason: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: the update's ``meta``: e.g. a central shard's ``worker`` and ``partition``
    meta: Mapping[str, str] = field(default_factory=dict)

    def as_hash(self) -> dict[str, str]:
        return {
            "node_id": self.node_id,
            "last_seen_ms": str(self.last_seen_ms),
            "last_sequence": str(self.last_sequence),
            "model_name": self.model_name,
            "tier": self.tier,
            "region": self.region or "",
            "excluded": "1" if self.excluded else "0",
            "reason": self.reason,
            "metrics": json.dumps(dict(self.metrics), sort_keys=True),
            "meta": json.dumps(dict(self.meta), sort_keys=True),
        }


class RegistryWriter:
    """Publishes models and node records; connects in :meth:`setup`, not at import."""

    def __init__(
        self,
        url: str,
        *,
        codec: Codec | None = None,
        history_size: int = 50,
        keys: RegistryKeys | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be >= 1")
        self.url = url
        self.codec = codec or Codec()
        self.history_size = history_size
        self.keys = keys or RegistryKeys()
        self._client: redis.Redis | None = None
        self._given = client  # a service's own client (its timeouts and retry policy)

    def setup(self) -> RegistryWriter:
        self._client = self._given or redis.Redis.from_url(
            self.url, socket_timeout=5, socket_connect_timeout=5
        )
        self._client.ping()
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("RegistryWriter.setup() was not called")
        return self._client

    def publish_model(
        self,
        record: Mapping[str, Any],
        nodes: Iterable[NodeRecord] = (),
        *,
        name: str | None = None,
    ) -> None:
        """Store a GlobalModel record as current, in the bounded history, with node records.

        ``name`` is the registry entry (default: the record's model spec name),
        e.g. ``spec@region:R`` for a regional model.
        """
        with self.client.pipeline(transaction=True) as tx:
            self.queue_model(tx, record, name=name)
            self.queue_nodes(tx, nodes)
            tx.execute()

    def queue_model(self, tx: Any, record: Mapping[str, Any], *, name: str | None = None) -> bytes:
        """Queue a model's writes on ``tx`` (a MULTI/EXEC pipeline others add to); its bytes."""
        name = name or record["model_name"]
        data = self.codec.encode("GlobalModel", dict(record))
        tx.set(self.keys.current(name), data)
        tx.lpush(self.keys.history(name), data)
        tx.ltrim(self.keys.history(name), 0, self.history_size - 1)
        tx.sadd(self.keys.models, name)
        return data

    def queue_held(self, tx: Any, record: Mapping[str, Any], *, name: str | None = None) -> None:
        """Queue a held-back version: in the history (why it was held is in the record), never
        current, so no reader of the current model can be handed it."""
        name = name or record["model_name"]
        data = self.codec.encode("GlobalModel", dict(record))
        tx.lpush(self.keys.history(name), data)
        tx.ltrim(self.keys.history(name), 0, self.history_size - 1)

    def current_version(self, name: str) -> int:
        """Version of ``name``'s current record (0 if none): a restart goes on from it."""
        data = self.client.get(self.keys.current(name))
        return (
            0 if data is None else int(self.codec.decode(data, expected="GlobalModel")["version"])
        )

    def record_nodes(self, nodes: Iterable[NodeRecord]) -> None:
        """Node records alone (e.g. an update excluded before any model is published)."""
        with self.client.pipeline(transaction=True) as tx:
            self.queue_nodes(tx, nodes)
            tx.execute()

    def queue_nodes(self, tx: Any, nodes: Iterable[NodeRecord]) -> None:
        for node in nodes:
            tx.hset(self.keys.node(node.node_id), mapping=node.as_hash())
            tx.sadd(self.keys.nodes, node.node_id)
