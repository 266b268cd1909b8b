"""Models out of the Redis registry and into River, for users of Prism.

Three lines from import to a prediction::

    from prism.client import load_model
    model = load_model("fraud-linear")              # River: StandardScaler | LogisticRegression
    model.predict_proba_one({"amount_log": 6.2, "foreign": 1.0})

A name is what ``prism models list`` shows (a global model such as
``fraud-linear``, a regional one such as ``fraud-linear@region:eu``) or what
``prism models nodes`` shows for a node whose cumulative snapshot the merger
keeps (a central learner's partition shard, e.g. ``prism-central-fraud/p0``).
Registry names win when a node has the same id.

Every call reads, never writes: the read-only ``prism-query`` user is enough.
That user may not subscribe to channels (prism/stack/redis_acl.py), so
:func:`watch` polls: one GET of the current record per interval, decoded only
when its bytes change.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis

from models.errors import ModelError
from models.serialization import global_model_from_record, summary_from_weight_record
from models.specs import get_spec
from models.summary import Summary
from runtime.errors import NotFoundError, PrismError, StackError
from runtime.model_registry import RegistryKeys
from runtime.model_registry.client import RegistryUnavailableError
from runtime.settings import Settings, load_settings
from schemas import Codec, SchemaError

__all__ = [
    "Client",
    "CorruptModelError",
    "ModelEntry",
    "ModelVersion",
    "NotFoundError",
    "RegistryUnavailableError",
    "load_model",
    "models",
    "watch",
]

#: the merge job's default ``--group``: where node snapshots rest (``prism merger run``)
MERGER_GROUP = "prism-merger"


class CorruptModelError(PrismError):
    """A registry value that fails to decode or verify: not a model to score with."""


@dataclass(frozen=True)
class ModelEntry:
    """One loadable model, as :func:`models` lists it.

    ``kind`` is ``global`` (a merged model), ``regional`` (``spec@region:R``),
    ``worker`` (``spec@worker``: a central worker's own model, as older
    versions wrote) or ``node`` (a node's last merged cumulative snapshot;
    ``version`` is then the node's sequence number).
    """

    name: str
    kind: str
    spec: str
    version: int
    updated_at: dt.datetime
    n_samples: int
    features: int


@dataclass(frozen=True)
class ModelVersion:
    """A loaded model with where it came from: what :func:`watch` yields."""

    entry: ModelEntry
    model: Any  # a River estimator: predict_proba_one (fraud) or score_one (iot)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def version(self) -> int:
        return self.entry.version


class Client:
    """A read-only connection to the registry.

    ``url`` defaults to ``PRISM_REDIS_QUERY_URL``, then ``PRISM_REDIS_URL``
    (or what ``prism stack up`` wrote); ``prefix`` to ``PRISM_REDIS_PREFIX``.
    ``merger_group`` is the merge job's ``--group``, whose node snapshots
    :meth:`load` offers.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str | None = None,
        merger_group: str = MERGER_GROUP,
        settings: Settings | None = None,
    ) -> None:
        if url is None or prefix is None:
            settings = settings or load_settings()
            prefix = settings.redis_prefix if prefix is None else prefix
            if url is None:
                secret = settings.redis_query_url or settings.redis_url
                if secret is None:
                    raise StackError(
                        "no Redis configured: pass url=, run `prism stack up` "
                        "or set PRISM_REDIS_QUERY_URL"
                    )
                url = secret.get_secret_value()
        self.keys = RegistryKeys(prefix)
        self.snapshots_key = self.keys.merger(merger_group, "snapshots")
        self.codec = Codec(max_bytes=64 * 1024 * 1024)
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries ------------------------------------------------------------------
    def models(self) -> list[ModelEntry]:
        """Every loadable model: registry entries by name, then node snapshots by id."""
        names = sorted(m.decode() for m in self._call(self._redis.smembers, self.keys.models))
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.get(self.keys.current(name))
        entries = [
            self._registry_entry(name, data)[0]
            for name, data in zip(names, self._call(pipe.execute), strict=True)
            if data is not None
        ]
        snapshots = self._call(self._redis.hgetall, self.snapshots_key)
        for node in sorted(snapshots):
            entries.append(self._node_entry(node.decode(), snapshots[node])[0])
        return entries

    def names(self) -> list[str]:
        """What :meth:`load` accepts: registry names, then node ids, each sorted."""
        names = self._call(self._redis.smembers, self.keys.models)
        nodes = self._call(self._redis.hkeys, self.snapshots_key)
        return sorted(n.decode() for n in names) + sorted(n.decode() for n in nodes)

    def load(self, name: str) -> ModelVersion:
        """The current model ``name`` as a ready River estimator, with its entry."""
        data = self._call(self._redis.get, self.keys.current(name))
        if data is not None:
            return self._build(*self._registry_entry(name, data))
        data = self._call(self._redis.hget, self.snapshots_key, name)
        if data is not None:
            return self._build(*self._node_entry(name, data))
        known = ", ".join(self.names()) or "none yet"
        raise NotFoundError(f"no model named {name!r} in the registry (known: {known})")

    def watch(
        self,
        name: str,
        *,
        after: int = 0,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[ModelVersion]:
        """Each version of ``name`` newer than ``after``, as it appears, oldest first.

        Polls every ``poll_s`` seconds (the query user may not subscribe to
        keyspace notifications); a name not in the registry yet is waited
        for. Versions published between two polls are skipped: each poll
        yields the newest. Ends when ``timeout_s`` passes without a new
        version (``None``: never).
        """
        if poll_s <= 0:
            raise ValueError("poll_s must be > 0")
        seen, last_bytes = after, None
        deadline = None if timeout_s is None else clock() + timeout_s
        while True:
            data = self._call(self._redis.get, self.keys.current(name))
            if data is None:
                data = self._call(self._redis.hget, self.snapshots_key, name)
                parse = self._node_entry
            else:
                parse = self._registry_entry
            if data is not None and data != last_bytes:
                last_bytes = data
                entry, summary = parse(name, data)
                if entry.version > seen:
                    seen = entry.version
                    yield self._build(entry, summary)
                    deadline = None if timeout_s is None else clock() + timeout_s
            if deadline is not None and clock() >= deadline:
                return
            sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - clock())))

    # -- decoding -----------------------------------------------------------------
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.ConnectionError as e:  # includes a refused password
            raise RegistryUnavailableError(f"cannot reach the Redis registry: {e}") from e
        except redis.ResponseError as e:  # e.g. NOPERM: a user without read access
            raise RegistryUnavailableError(f"the Redis registry refused a read: {e}") from e

    def _registry_entry(self, name: str, data: bytes) -> tuple[ModelEntry, Summary]:
        try:
            info = global_model_from_record(self.codec.decode(data, expected="GlobalModel"))
        except (SchemaError, ModelError) as e:
            raise CorruptModelError(f"registry entry {name!r} cannot be loaded: {e}") from e
        spec, _, qualifier = name.partition("@")
        kind = "global" if not qualifier else "regional" if "region:" in qualifier else "worker"
        s = info.summary
        entry = ModelEntry(
            name,
            kind,
            s.model_name,
            info.version,
            _utc(info.created_at_ms),
            s.n_samples,
            len(s.features),
        )
        return entry, s

    def _node_entry(self, node: str, data: bytes) -> tuple[ModelEntry, Summary]:
        try:
            record = self.codec.decode(data, expected="WeightSummary")
            s = summary_from_weight_record(record)
        except (SchemaError, ModelError) as e:
            raise CorruptModelError(f"snapshot of node {node!r} cannot be loaded: {e}") from e
        entry = ModelEntry(
            node,
            "node",
            s.model_name,
            s.sequence,
            _utc(record["created_at"]),
            s.n_samples,
            len(s.features),
        )
        return entry, s

    def _build(self, entry: ModelEntry, summary: Summary) -> ModelVersion:
        try:
            model = get_spec(summary.model_name).load(summary)
        except ModelError as e:
            raise CorruptModelError(f"model {entry.name!r} cannot be loaded: {e}") from e
        return ModelVersion(entry, model)


def _utc(when: int | dt.datetime) -> dt.datetime:
    """A record's timestamp-millis (an int, or a datetime from fastavro) in UTC."""
    if isinstance(when, dt.datetime):
        return when.astimezone(dt.UTC)
    return dt.datetime.fromtimestamp(when / 1000, tz=dt.UTC)


def load_model(name: str, url: str | None = None, *, prefix: str | None = None) -> Any:
    """The current model ``name`` from the registry as a ready River estimator.

    Raises :class:`~runtime.errors.NotFoundError` (listing the known names),
    :class:`RegistryUnavailableError` or :class:`CorruptModelError`.
    """
    with Client(url, prefix=prefix) as client:
        return client.load(name).model


def watch(
    name: str,
    url: str | None = None,
    *,
    prefix: str | None = None,
    after: int = 0,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> Iterator[ModelVersion]:
    """Each new version of ``name`` as it appears (see :meth:`Client.watch`)."""
    with Client(url, prefix=prefix) as client:
        yield from client.watch(name, after=after, poll_s=poll_s, timeout_s=timeout_s)


def models(url: str | None = None, *, prefix: str | None = None) -> list[ModelEntry]:
    """Every model :func:`load_model` can load, with version, spec and update time."""
    with Client(url, prefix=prefix) as client:
        return client.models()
