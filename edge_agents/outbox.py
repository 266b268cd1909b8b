"""The node's durable memory: an SQLite outbox of summaries plus the learner's state.

Why one SQLite file: a summary and the state it was cut from (federated
replica, personal model, mixer weights, baseline, sequence number, the read
position in the node's event source) must be written together or not at all.
One transaction does that, so after a crash or SIGKILL the agent resumes from
a state whose every increment is in the outbox exactly once, under the
sequence number it was given:

- rows are marked sent only when the broker confirmed delivery;
- unsent rows are resent after a restart with the same bytes and sequence
  (the merger drops a copy it already merged by (node id, sequence));
- events after the saved position are read again, so nothing is learned twice
  and nothing is skipped.

Models rest as ``WeightSummary`` Avro records (never pickles); pending
events and positions as JSON. ``forward`` buffers raw events of hybrid mode
while the node is cut off.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agents.learner import EdgeState
from models.serialization import summary_from_weight_record, weight_summary_record
from models.summary import Summary
from schemas import Codec

__all__ = ["Outbox", "OutboxRow", "SavedState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    sequence INTEGER PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    sent_ms INTEGER,
    set_aside TEXT
);
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    node_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    position TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    global_version INTEGER NOT NULL,
    global_created_ms INTEGER NOT NULL,
    local BLOB NOT NULL,
    baseline BLOB,
    global BLOB,
    pending TEXT NOT NULL,
    saved_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS personal (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    personal BLOB NOT NULL,
    mixer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unacked_scores (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key BLOB NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS forward (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    sequence: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class SavedState:
    state: EdgeState
    position: Any


class Outbox:
    """SQLite in WAL mode with ``synchronous=FULL``: a committed row survives a crash."""

    def __init__(self, path: Path, *, node_id: str, model_name: str, codec: Codec) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.node_id, self.model_name, self.codec = path, node_id, model_name, codec
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "set_aside" not in columns:  # an outbox written before rows could be set aside
            self._db.execute("ALTER TABLE outbox ADD COLUMN set_aside TEXT")

    def close(self) -> None:
        self._db.close()

    # -- summaries ------------------------------------------------------------
    def commit(
        self,
        state: EdgeState,
        position: Any,
        payload: bytes | None = None,
        unacked: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Save ``state`` (and the summary cut from it, if any) in one transaction, with the
        scores not yet acknowledged (``unacked``, replacing the last ones; None: kept)."""
        now = int(time.time() * 1000)
        with self._transaction():
            if unacked is not None:
                self._replace_unacked(unacked)
            if payload is not None:
                self._db.execute(
                    "INSERT INTO outbox (sequence, created_ms, payload) VALUES (?, ?, ?)",
                    (state.sequence, now, payload),
                )
            self._db.execute(
                "INSERT OR REPLACE INTO state VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.node_id,
                    self.model_name,
                    json.dumps(position),
                    state.sequence,
                    state.global_version,
                    state.global_created_ms,
                    self._encode(state.replica),
                    self._encode(state.baseline),
                    self._encode(state.global_),
                    json.dumps(list(state.pending.items())),
                    now,
                ),
            )
            if state.personal is not None:
                self._db.execute(
                    "INSERT OR REPLACE INTO personal VALUES (1, ?, ?)",
                    (self._encode(state.personal), json.dumps(state.mixer)),
                )

    def unsent(self, limit: int = 1000) -> list[OutboxRow]:
        rows = self._db.execute(
            "SELECT sequence, payload FROM outbox WHERE sent_ms IS NULL AND set_aside IS NULL "
            "ORDER BY sequence LIMIT ?",
            (limit,),
        )
        return [OutboxRow(int(s), bytes(p)) for s, p in rows]

    def mark_sent(self, sequence: int) -> bool:
        """Mark the row sent; False when there is no such unsent row (nothing changed)."""
        cursor = self._db.execute(
            "UPDATE outbox SET sent_ms = ? WHERE sequence = ? AND sent_ms IS NULL",
            (int(time.time() * 1000), sequence),
        )
        return cursor.rowcount > 0

    def set_aside(self, sequence: int, reason: str) -> bool:
        """Take an unsent row out of the queue for good, with why: a row that can never be
        sent (it stays in the file, its payload in the node's dead letters). False when
        there is no such unsent row."""
        cursor = self._db.execute(
            "UPDATE outbox SET set_aside = ? WHERE sequence = ? AND sent_ms IS NULL "
            "AND set_aside IS NULL",
            (reason, sequence),
        )
        return cursor.rowcount > 0

    def counts(self) -> dict[str, int]:
        total, sent, aside = self._db.execute(
            "SELECT COUNT(*), COUNT(sent_ms), COUNT(set_aside) FROM outbox"
        ).fetchone()
        return {"summaries": int(total), "sent": int(sent), "set_aside": int(aside),
                "unsent": int(total - sent - aside)}  # fmt: skip

    def payloads(self) -> list[tuple[int, bytes, int | None]]:
        """Every row (sequence, payload, sent_ms), for inspection and tests."""
        rows = self._db.execute("SELECT sequence, payload, sent_ms FROM outbox ORDER BY sequence")
        return [(int(s), bytes(p), t) for s, p, t in rows]

    # -- scores not yet acknowledged (edge_agents/pending.py) ----------------
    def unacked_scores(self) -> list[tuple[bytes, bytes]]:
        """(key, value) of the scores the last save found unacknowledged, in produce order."""
        rows = self._db.execute("SELECT key, value FROM unacked_scores ORDER BY id")
        return [(bytes(k), bytes(v)) for k, v in rows]

    def save_unacked(self, unacked: list[tuple[bytes, bytes]]) -> None:
        with self._transaction():
            self._replace_unacked(unacked)

    def _replace_unacked(self, unacked: list[tuple[bytes, bytes]]) -> None:
        self._db.execute("DELETE FROM unacked_scores")
        if unacked:
            self._db.executemany("INSERT INTO unacked_scores (key, value) VALUES (?, ?)", unacked)

    # -- state ----------------------------------------------------------------
    def load(self) -> SavedState | None:
        row = self._db.execute(
            "SELECT node_id, model_name, position, sequence, global_version, global_created_ms,"
            " local, baseline, global, pending FROM state WHERE id = 1"
        ).fetchone()
        if row is None:
            return None
        node, model, position, seq, version, created, local, base, glob, pending = row
        if (node, model) != (self.node_id, self.model_name):
            raise ValueError(
                f"{self.path} holds node {node!r} / model {model!r}, not "
                f"{self.node_id!r} / {self.model_name!r}: use another --state-dir"
            )
        extra = self._db.execute("SELECT personal, mixer FROM personal WHERE id = 1").fetchone()
        state = EdgeState(
            replica=self._decode(local),
            baseline=self._decode(base) if base is not None else None,
            global_=self._decode(glob) if glob is not None else None,
            global_version=int(version),
            global_created_ms=int(created),
            sequence=int(seq),
            pending={k: dict(v) for k, v in json.loads(pending)},
            personal=self._decode(extra[0]) if extra is not None else None,
            mixer=json.loads(extra[1]) if extra is not None else None,
        )
        return SavedState(state, json.loads(position))

    # -- hybrid forwarding buffer ---------------------------------------------
    def buffer_forward(self, items: list[tuple[str, bytes | None, bytes]]) -> None:
        with self._transaction():
            self._db.executemany("INSERT INTO forward (topic, key, value) VALUES (?, ?, ?)", items)

    def forward_batch(self, limit: int = 5000) -> list[tuple[int, str, bytes | None, bytes]]:
        rows = self._db.execute(
            "SELECT id, topic, key, value FROM forward ORDER BY id LIMIT ?", (limit,)
        )
        return [(int(i), t, bytes(k) if k is not None else None, bytes(v)) for i, t, k, v in rows]

    def drop_forwarded(self, up_to_id: int) -> None:
        self._db.execute("DELETE FROM forward WHERE id <= ?", (up_to_id,))

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    def _encode(self, summary: Summary | None) -> bytes | None:
        if summary is None:
            return None
        stamped = (
            summary
            if summary.node_id
            else summary.with_provenance(
                node_id=self.node_id, sequence=summary.sequence, base_version=summary.base_version
            )
        )
        record = weight_summary_record(stamped, tier="edge", created_at_ms=0)
        return self.codec.encode("WeightSummary", record)

    def _decode(self, data: bytes) -> Summary:
        return summary_from_weight_record(self.codec.decode(bytes(data), expected="WeightSummary"))


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
