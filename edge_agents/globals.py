"""Global models reaching the node: the compacted global-model topic, or the registry.

The topic is compacted and keyed by model name, so a fresh consumer reading
from the beginning sees the latest version of every model quickly; the node
keeps only versions newer than the one it holds. The registry source polls
``prism:model:{name}:current`` instead, for nodes that may reach Redis but
not Kafka's consumer protocol. Either way a record that does not decode, or
does not verify against the trust file (schemas/identity.py), is a local dead
letter with its reason, never a crash and never adopted.

Between whole versions, globals on the topic are deltas from the previous
version (docs/bytes.md); whole versions (every 16th, the first, a new layout)
go under ``<model>@whole``, which compaction keeps, so a fresh node starts the
chain there. A delta from a version the node does not hold, or a layout it
does not know yet, is skipped until the next whole version, not dead-lettered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from edge_agents.sources import OnBad
from models.errors import DeltaBaseError, ModelError, UnknownLayoutError
from models.packing import LayoutBook
from models.serialization import GlobalModelInfo, global_model_from_record
from models.summary import Summary
from runtime.errors import NotFoundError
from runtime.model_registry.client import RegistryClient, RegistryUnavailableError
from schemas import Codec
from schemas.identity import KeyVerifier
from schemas.signing import SignatureError

log = logging.getLogger(__name__)

__all__ = ["RegistryGlobals", "TopicGlobals"]


def _authentic(
    verifier: KeyVerifier | None, record: Any, where: Any, raw: bytes, on_bad: OnBad
) -> bool:
    """Checked before anything of the record is used (its layout, its version): a global
    that does not verify is a local dead letter with its reason, and the node keeps
    scoring with the model it has."""
    if verifier is None:
        return True
    try:
        verifier.check(record)
    except SignatureError as e:
        on_bad(e.reason_code, f"global model not adopted: {e}", where, raw)
        return False
    return True


class TopicGlobals:
    """Newest GlobalModel of ``model_name`` on the compacted topic."""

    linked = True  # reachability of Kafka is the Link's business

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        model_name: str,
        node_id: str,
        codec: Codec,
        on_bad: OnBad,
        security: Mapping[str, str] | None = None,
        verifier: KeyVerifier | None = None,
    ) -> None:
        self.model_name, self.codec, self.on_bad = model_name, codec, on_bad
        self.verifier = verifier
        self.newest_seen = 0  # highest verified version read in this session
        self.book = LayoutBook()  # layouts this node holds: announced ones and its own
        self.held: Summary | None = None  # the newest version decoded: deltas add to it
        self.unresolved = 0
        self.consumer = Consumer(
            {
                **(security or {}),
                "bootstrap.servers": bootstrap,
                # no commits: every start reads the compacted topic from the beginning
                "group.id": f"prism-edge-globals-{node_id}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )
        self._attach(topic)

    def _attach(self, topic: str) -> None:
        """Assign every partition from the beginning (no group join wait); subscribe when
        the broker cannot be asked now, so the feed starts once it is back."""
        try:
            meta = self.consumer.list_topics(topic, timeout=5.0).topics[topic]
            if meta.error is not None or not meta.partitions:
                raise KafkaException(meta.error)
        except KafkaException:
            self.consumer.subscribe([topic])
            return
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
        )

    def poll(self) -> GlobalModelInfo | None:
        newest: GlobalModelInfo | None = None
        for m in self.consumer.consume(50, timeout=0):
            if m.error() is not None or m.value() is None:
                continue
            key = (m.key() or b"").decode(errors="replace")
            if key not in (self.model_name, f"{self.model_name}@whole"):
                continue
            info = self._decode(m.value(), {"topic": m.topic(), "offset": m.offset()})
            # >=: a version republished for everyone (a promoted canary) follows its first record
            if info is not None and (newest is None or info.version >= newest.version):
                newest = info
        return newest

    def _decode(self, value: bytes, where: Any) -> GlobalModelInfo | None:
        try:
            record = self.codec.decode(value, expected="GlobalModel")
        except ValueError as e:
            self.on_bad("bad-global-model", str(e), where, value)
            return None
        if not _authentic(self.verifier, record, where, value, self.on_bad):
            return None
        if record["version"] < self.newest_seen:  # the merger writes versions in order
            self.on_bad(
                "replayed",
                f"global version {record['version']} arrived after "
                f"{self.newest_seen}: an old model sent again",
                where,
                value,
            )
            return None
        self.newest_seen = record["version"]
        try:
            info = global_model_from_record(record, self.book, self.held)
        except (UnknownLayoutError, DeltaBaseError) as e:
            self.unresolved += 1
            log.info("global model skipped until a whole version comes: %s", e)
            return None
        except (ModelError, ValueError) as e:
            self.on_bad("bad-global-model", str(e), where, value)
            return None
        if self.held is None or info.version > self.held.base_version:
            self.held = info.summary
        return info

    def close(self) -> None:
        self.consumer.close()


class RegistryGlobals:
    """Poll the registry's current GlobalModel every ``every_s`` seconds."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        model_name: str,
        on_bad: OnBad,
        every_s: float = 2.0,
        verifier: KeyVerifier | None = None,
    ) -> None:
        self.verifier = verifier
        self.client, self.model_name, self.on_bad, self.every_s = (
            client,
            model_name,
            on_bad,
            every_s,
        )
        self.linked = True
        self._last = 0.0
        self._seen: tuple[int, bool] = (0, False)

    def poll(self) -> GlobalModelInfo | None:
        if time.monotonic() - self._last < self.every_s:
            return None
        self._last = time.monotonic()
        try:
            record = self.client.get_model(self.model_name)
            self.linked = True
        except NotFoundError:
            self.linked = True
            return None
        except RegistryUnavailableError as e:
            if self.linked:
                log.warning("registry unreachable: %s", e)
            self.linked = False
            return None
        except (ModelError, ValueError) as e:
            self.on_bad("bad-global-model", str(e), {"registry": self.model_name}, b"")
            return None
        where = {"registry": self.model_name}
        if not _authentic(self.verifier, record, where, b"", self.on_bad):
            return None
        try:
            info = global_model_from_record(record)
        except ModelError as e:
            self.on_bad("bad-global-model", str(e), {"registry": self.model_name}, b"")
            return None
        seen = (info.version, info.canary is None)  # a promoted canary comes again, for all
        if seen <= self._seen:
            return None
        self._seen = seen
        return info

    def close(self) -> None:
        self.client.close()
