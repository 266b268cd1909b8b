"""The merger's secure rounds over Kafka, framework-free: a state machine, clock passed in.

One round at a time per model. Each phase is announced with a SecAggRound
record (``out``) and collects one step record per node from its topic
(:meth:`SecureRounds.take`, after the loop verified the signature):

======== ============================================= ===========================
phase    waits for                                     closes when
======== ============================================= ===========================
keys     SecAggKeys (public keys + the offered         ``round_size`` nodes, or
         increment's sequence)                         ``keys_timeout`` after the
                                                       first with >= ``min``
shares   SecAggShares of every roster node             all in, or ``step_timeout``
input    SecAggMasked of every node that shared        all in, or ``step_timeout``
confirm  SecAggConfirm of every survivor (the          all in, or ``step_timeout``
         survivor set it was given, signed)
unmask   SecAggUnmask of every survivor that confirmed all in, or ``step_timeout``
======== ============================================= ===========================

The ``input`` phase goes out as one record per node that shared, holding
only the ciphertexts addressed to it (the loop writes it to that node's
partition of ``secagg-routed``); every other record is round-wide.

The ``unmask`` record carries the confirmations it collected: a node reveals
shares only when at least ``min_survivors`` (and more than half) of them
verify for exactly the survivor set it confirmed itself, so a merger that
names a node alive to some and dropped to others cannot collect both of its
secrets (Bonawitz et al.'s consistency check). Fewer confirmations abandon
the round.

A node missing at a step has dropped out. When too few are left (or a
secret has too few shares) the round is **abandoned**: a SecAggRound
``abandoned`` with the reason, nothing published; the nodes still hold their
increments (unsent in their outboxes) and offer them to the next round.
Otherwise the survivors' sum is unmasked (:mod:`models.secagg.server`) and
returned as :class:`Finished`; the loop publishes it as the next version and
then announces ``done`` with the nodes in the sum, which is when a node
counts its increment delivered. The merger never holds one node's update.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import ModelError
from models.secagg.aggregate import vector_width
from models.secagg.messages import DEFAULT_MAX_DROPOUT, Advertise, RoundAbandoned, RoundSpec
from models.secagg.server import Abandoned, Server
from models.summary import Summary
from runtime.secagg import (
    StepRefused,
    advertise_of,
    confirmation_of,
    masked_of,
    shares_of,
    unmask_of,
)

__all__ = ["Finished", "Outcome", "SecureConfig", "SecureRounds"]

PHASES = ("keys", "shares", "input", "confirm", "unmask")
STEP_OF = {"SecAggKeys": "keys", "SecAggShares": "shares", "SecAggMasked": "input",
           "SecAggConfirm": "confirm", "SecAggUnmask": "unmask"}  # fmt: skip
#: why a round was abandoned, by the phase that could not close (a metric label)
ABANDON_CODE = {"keys": "too-few-nodes", "shares": "dropouts-shares",
                "input": "dropouts-input", "confirm": "unconfirmed",
                "unmask": "too-few-shares"}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class SecureConfig:
    model_name: str = "fraud-linear"
    round_size: int = 10
    min_participants: int = 2
    keys_timeout_s: float = 30.0
    step_timeout_s: float = 10.0
    max_dropout: float = DEFAULT_MAX_DROPOUT

    def __post_init__(self) -> None:
        if self.min_participants < 2:
            raise ValueError("secure rounds need at least 2 participants: a sum of one is that one")
        if self.round_size < self.min_participants:
            raise ValueError("the round size cannot be below the minimum participants")
        if self.keys_timeout_s <= 0 or self.step_timeout_s <= 0:
            raise ValueError("secure round timeouts must be positive")
        if not 0 <= self.max_dropout < 0.5:
            raise ValueError(f"the secure max dropout is in [0, 0.5), got {self.max_dropout}")


@dataclass(frozen=True)
class Finished:
    """An unmasked sum, ready to become a version (``included``: (node, sequence))."""

    round_id: str
    model_name: str
    features: tuple[str, ...]
    total: np.ndarray
    included: tuple[tuple[str, int], ...]
    opened_ms: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class Outcome:
    """A round's end for the metrics: ``unmasked`` or ``abandoned`` (with ``reason``), its
    duration on the merger's clock, and how many nodes missed each step."""

    model_name: str
    outcome: str
    reason: str | None
    seconds: float
    dropouts: Mapping[str, int]


@dataclass
class _Round:
    round_id: str
    opened_ms: int
    phase: str = "keys"
    phase_ms: int = 0
    first_ms: int | None = None
    offers: dict[str, tuple[Advertise, int, tuple[str, ...]]] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=lambda: {p: {} for p in PHASES})
    signatures: dict[tuple[str, str], bytes | None] = field(default_factory=dict)
    server: Server | None = None
    features: tuple[str, ...] = ()
    expected: frozenset[str] = frozenset()  # who the current phase waits for
    bytes_up: int = 0
    bytes_down: int = 0
    bytes_wide: int = 0  # of bytes_down: round-wide records, every node downloads them
    bytes_routed: dict[int, int] = field(default_factory=dict)  # routed partition -> bytes
    dropped: set[str] = field(default_factory=set)
    dropouts: dict[str, int] = field(default_factory=dict)  # step -> nodes that missed it
    survivors: tuple[str, ...] = ()


class SecureRounds:
    """The merger's side; ``out`` holds SecAggRound records for the loop to produce."""

    def __init__(
        self,
        config: SecureConfig,
        *,
        current: Callable[[str], Summary | None],
        merged_before: Callable[[str, int], bool],
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config, self.current, self.merged_before, self.timer = (
            config,
            current,
            merged_before,
            timer,
        )
        self.round: _Round | None = None
        self.past: deque[str] = deque(maxlen=1000)  # round ids that are over
        self.out: list[dict[str, Any]] = []
        self.outcomes: list[Outcome] = []  # drained by the loop into its metrics
        self.counters: dict[str, int] = {}
        self._serial = 0

    # -- records out -------------------------------------------------------------
    def _announce(self, r: _Round, phase: str, now_ms: int, **fields: Any) -> None:
        self.out.append(
            {
                "round_id": r.round_id,
                "model_name": self.config.model_name,
                "phase": phase,
                "max_dropout": self.config.max_dropout,
                "created_at": int(now_ms),
                "reason": None,
            }
            | fields  # fmt: skip
        )

    def open(self, now_ms: int) -> str:
        """A new round in phase keys (the loop calls it whenever no round is open)."""
        self._serial += 1
        rid = f"{self.config.model_name}/{now_ms}/{self._serial}"
        self.round = _Round(rid, now_ms, phase_ms=now_ms)
        self._announce(self.round, "keys", now_ms)
        return rid

    def count_down(self, n_bytes: int, partition: int | None = None) -> None:
        """Bytes of a SecAggRound record produced: round-wide (every node reads it), or on
        ``partition`` of the routed topic (the nodes of that partition read it)."""
        r = self.round
        if r is None:
            return
        r.bytes_down += n_bytes
        if partition is None:
            r.bytes_wide += n_bytes
        else:
            r.bytes_routed[partition] = r.bytes_routed.get(partition, 0) + n_bytes

    # -- records in ----------------------------------------------------------------
    def take(self, contract: str, record: Mapping[str, Any], signature: bytes | None,
             size: int, now_ms: int) -> None:  # fmt: skip
        """Admit one verified step record, or raise :class:`StepRefused` with the reason."""
        r, rid, node = self.round, record["round_id"], record["node_id"]
        if r is None or rid != r.round_id:
            if rid in self.past:
                raise StepRefused("replayed", f"round {rid!r} is over; {contract} of {node!r}")
            raise StepRefused("secagg-unknown-round", f"no open round {rid!r} ({contract})")
        step = STEP_OF[contract]
        key = (step, node)
        if key in r.signatures:
            if signature is not None and r.signatures[key] == signature:
                return  # the same record delivered again
            raise StepRefused(
                "replayed", f"a second {contract} of {node!r} in round {rid!r} with other content"
            )
        if step != r.phase:
            late = PHASES.index(step) < PHASES.index(r.phase)
            raise StepRefused(
                "secagg-late" if late else "invalid-secagg",
                f"{contract} of {node!r} in phase {r.phase} of round {rid!r}"
                + (": its step closed, the node counts as dropped" if late else ""),
            )
        if step == "keys":
            self._take_keys(r, record)
        elif node not in r.expected:
            raise StepRefused("secagg-not-in-round", f"{node!r} is not expected at {step}")
        else:
            self._take_step(r, step, record)
        r.signatures[key] = signature
        r.bytes_up += size
        if r.first_ms is None:
            r.first_ms = now_ms

    def _take_keys(self, r: _Round, record: Mapping[str, Any]) -> None:
        node, seq = record["node_id"], int(record["sequence"])
        if record["model_name"] != self.config.model_name:
            raise StepRefused(
                "secagg-wrong-model",
                f"round {r.round_id!r} is for {self.config.model_name!r}, "
                f"not {record['model_name']!r}",
            )
        if self.merged_before(node, seq):
            raise StepRefused("duplicate", f"({node}, {seq}) was merged before")
        if len(r.offers) >= self.config.round_size:
            raise StepRefused("secagg-late", f"round {r.round_id!r} is full")
        r.offers[node] = (advertise_of(record), seq, tuple(record["features"]))

    def _take_step(self, r: _Round, step: str, record: Mapping[str, Any]) -> None:
        assert r.server is not None  # past phase keys
        node = record["node_id"]
        if step == "shares":
            r.records[step][node] = shares_of(record)
        elif step == "input":
            r.records[step][node] = masked_of(record, r.server.spec.length)
        elif step == "confirm":
            if sorted(record["survivors"]) != sorted(r.survivors):
                raise StepRefused(
                    "secagg-inconsistent",
                    f"{node!r} confirmed survivors {sorted(record['survivors'])}, the round "
                    f"named {sorted(r.survivors)}",
                )
            r.records[step][node] = confirmation_of(record)
        else:
            r.records[step][node] = unmask_of(record)

    # -- phases ----------------------------------------------------------------------
    def advance(self, now_ms: int) -> Finished | None:
        """Close the phase that is due; a finished sum, or None (maybe an abandoned round)."""
        r = self.round
        if r is None or not self._due(r, now_ms):
            return None
        try:
            return self._next(r, now_ms)
        except (RoundAbandoned, ModelError) as e:
            self._abandon(r, str(e), now_ms)
            return None

    def _due(self, r: _Round, now_ms: int) -> bool:
        c = self.config
        if r.phase == "keys":
            n = len(r.offers)
            timed = r.first_ms is not None and now_ms - r.first_ms >= c.keys_timeout_s * 1000
            return n >= c.round_size or (timed and n >= c.min_participants)
        if set(r.records[r.phase]) >= r.expected:
            return True
        return now_ms - r.phase_ms >= c.step_timeout_s * 1000

    def _next(self, r: _Round, now_ms: int) -> Finished | None:
        got = r.records[r.phase]
        missed = set(r.expected) - set(got) if r.phase != "keys" else set()
        r.dropped |= missed
        r.dropouts[r.phase] = len(missed)
        r.phase_ms = now_ms
        if r.phase == "keys":
            return self._to_shares(r, now_ms)
        assert r.server is not None
        if r.phase == "shares":
            routed = r.server.route_shares(got.values())
            r.phase, r.expected = "input", frozenset(routed)
            for v in sorted(routed):  # one record per receiver: a node reads its own only
                self._announce(r, "input", now_ms, routed={v: routed[v]}, nodes=[v])
            return None
        if r.phase == "input":
            r.survivors = r.server.collect_masked(got.values())
            r.phase, r.expected = "confirm", frozenset(r.survivors)
            self._announce(r, "confirm", now_ms, nodes=list(r.survivors))
            return None
        if r.phase == "confirm":
            need = r.server.spec.min_survivors
            if len(got) < need:
                raise RoundAbandoned(
                    f"consistency check: {len(got)} of {len(r.survivors)} survivors confirmed "
                    f"the survivor set, the round needs {need}"
                )
            r.phase, r.expected = "unmask", frozenset(got)
            self._announce(r, "unmask", now_ms, nodes=list(r.survivors),
                           confirmations=[got[v] for v in sorted(got)])  # fmt: skip
            return None
        started = self.timer()
        outcome = r.server.finish(got.values())
        if isinstance(outcome, Abandoned):
            raise RoundAbandoned(outcome.reason)
        self.round = None
        self.past.append(r.round_id)
        self._count("unmasked")
        self._ended(r, "unmasked", None, now_ms)
        included = tuple((v, r.offers[v][1]) for v in outcome.included)
        metrics = {
            "secagg_bytes_up": float(r.bytes_up),
            "secagg_bytes_down": float(r.bytes_down),
            # what the node that downloads most fetched of this round's records
            "secagg_bytes_down_node": float(r.bytes_wide + max(r.bytes_routed.values(), default=0)),
            "secagg_dropped": float(len(r.dropped)),
            "secagg_unmask_ms": (self.timer() - started) * 1000,
            "participants": float(len(r.offers)),
        }
        return Finished(r.round_id, self.config.model_name, r.features, outcome.total,
                        included, r.opened_ms, metrics)  # fmt: skip

    def _to_shares(self, r: _Round, now_ms: int) -> None:
        current = self.current(self.config.model_name)
        names = set(current.features) if current is not None else set()
        for _ad, _seq, feats in r.offers.values():
            names |= set(feats)
        r.features = tuple(sorted(names))
        spec = RoundSpec.create(
            r.round_id, list(r.offers), vector_width(self.config.model_name, r.features),
            max_dropout=self.config.max_dropout,
        )  # fmt: skip
        r.server = Server(spec)
        r.server.collect_keys(ad for ad, _s, _f in r.offers.values())
        r.phase, r.expected = "shares", frozenset(r.offers)
        roster = [
            {
                "node_id": v,
                "sequence": seq,
                "cipher_public": ad.cipher_public,
                "mask_public": ad.mask_public,
            }  # fmt: skip
            for v, (ad, seq, _f) in sorted(r.offers.items())
        ]
        self._announce(r, "shares", now_ms, features=list(r.features), length=spec.length,
                       roster=roster)  # fmt: skip

    def _abandon(self, r: _Round, reason: str, now_ms: int) -> None:
        self.round = None
        self.past.append(r.round_id)
        self._count("abandoned")
        self._ended(r, "abandoned", ABANDON_CODE[r.phase], now_ms)
        self.counters["abandoned-bytes"] = (
            self.counters.get("abandoned-bytes", 0) + r.bytes_up + r.bytes_down
        )
        self._announce(r, "abandoned", now_ms, reason=reason, nodes=sorted(r.offers))

    def done(self, finished: Finished, version: int, now_ms: int) -> None:
        """Announce that ``finished`` went out as ``version``: its nodes count it delivered."""
        self.out.append(
            {
                "round_id": finished.round_id,
                "model_name": finished.model_name,
                "phase": "done",
                "max_dropout": self.config.max_dropout,
                "created_at": int(now_ms),
                "reason": None,
                "nodes": [v for v, _s in finished.included],
                "version": int(version),
            }  # fmt: skip
        )

    def _ended(self, r: _Round, outcome: str, reason: str | None, now_ms: int) -> None:
        start = r.first_ms if r.first_ms is not None else r.opened_ms
        seconds = max(0.0, (now_ms - start) / 1000)
        self.outcomes.append(
            Outcome(self.config.model_name, outcome, reason, seconds, dict(r.dropouts))
        )

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1
