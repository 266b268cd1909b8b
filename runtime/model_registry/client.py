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
from schemas.identity import KeyVerifier
from schemas.signing import SignatureError


class RegistryUnavailableError(PrismError):
    exit_code = 2


class UnverifiedModelError(PrismError):
    """A registry model whose signature does not hold against the trust file."""

    exit_code = 4

    def __init__(self, message: str, reason_code: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class RegistryClient:
    """Reads of the registry; with a ``verifier`` (the trust file's public keys) a model
    is handed out only when the merger's signature holds: anyone who can write to
    Redis could otherwise put a model in front of every reader."""

    def __init__(
        self,
        url: str,
        *,
        codec: Codec | None = None,
        keys: RegistryKeys | None = None,
        verifier: KeyVerifier | None = None,
    ) -> None:
        self.codec = codec or Codec(max_bytes=64 * 1024 * 1024)
        self.keys = keys or RegistryKeys()
        self.verifier = verifier
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def close(self) -> None:
        self._redis.close()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.ConnectionError as e:
            raise RegistryUnavailableError(f"cannot reach the Redis registry: {e}") from e

    def shadow_states(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Every shadow job's saved state: group -> partition field (``p0``...) -> its JSON
        (:mod:`streams.shadow.loop`); SCAN, not KEYS (the query user may not run KEYS)."""
        prefix = self.keys.shadow("")
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for key in self._call(lambda: list(self._redis.scan_iter(match=self.keys.shadows()))):
            fields = self._call(self._redis.hgetall, key)
            group = key.decode()[len(prefix) :]
            out[group] = {f.decode(): json.loads(v) for f, v in fields.items()}
        return out

    def models(self) -> list[str]:
        """Names of every model with a current version, sorted."""
        return sorted(m.decode() for m in self._call(self._redis.smembers, self.keys.models))

    def get_model(self, name: str, *, verify: bool = True) -> dict[str, Any]:
        """The current GlobalModel record of ``name``; :class:`NotFoundError` if none,
        :class:`UnverifiedModelError` if ``verify`` and its signature does not hold."""
        data = self._call(self._redis.get, self.keys.current(name))
        if data is None:
            known = ", ".join(self.models()) or "none yet"
            raise NotFoundError(f"no model named {name!r} in the registry (known: {known})")
        record = self.codec.decode(data, expected="GlobalModel")
        if verify:
            self.verify(record)
        return record

    def verify(self, record: dict[str, Any]) -> None:
        """Raise :class:`UnverifiedModelError` unless the record verifies (no verifier: pass)."""
        if self.verifier is None:
            return
        try:
            self.verifier.check(record)
        except SignatureError as e:
            raise UnverifiedModelError(
                f"UNVERIFIED model {record.get('model_name')!r} version {record.get('version')}: "
                f"{e} [{e.reason_code}]; it was not written by a trusted merger key",
                e.reason_code,
            ) from e

    def verdict(self, record: dict[str, Any]) -> str:
        """One word for a listing: ``verified:<key id>``, ``UNVERIFIED:<reason>`` or
        ``unchecked`` (no trust file configured)."""
        if self.verifier is None:
            return "unchecked"
        try:
            self.verify(record)
        except UnverifiedModelError as e:
            return f"UNVERIFIED:{e.reason_code}"
        return f"verified:{record['key_id']}"

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Versions of ``name``, newest first (bounded by the writer's history size)."""
        end = -1 if limit is None else limit - 1
        items = self._call(self._redis.lrange, self.keys.history(name), 0, end)
        if not items and not self._call(self._redis.exists, self.keys.current(name)):
            raise NotFoundError(f"no model named {name!r} in the registry")
        return [self.codec.decode(item, expected="GlobalModel") for item in items]

    def quarantined(self, name: str) -> set[int]:
        """Versions of ``name`` an operator quarantined: never to be served again."""
        members = self._call(self._redis.smembers, self.keys.quarantine(name))
        return {int(v) for v in members}

    def pin_of(self, node_id: str) -> int | None:
        """The global version an operator pinned ``node_id`` to, or None."""
        raw = self._call(self._redis.hget, self.keys.pins, node_id)
        return None if raw is None else int(raw)

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
