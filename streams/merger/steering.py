"""The merger's steering between batches: operators' rollbacks and quarantine, canary verdicts.

Split from :mod:`streams.merger.loop` at its seam: these steps read intents
and verdicts, ask the pure cores (:mod:`streams.merger.lifecycle`,
:mod:`streams.merger.canary`) what to do, and hand back versions to publish
(:class:`~streams.merger.rounds.Closed`) that the loop commits like a
round's. They run only when Redis holds everything published, so what they
read is what the merger has done. A mixin of :class:`MergerLoop`: the
attributes it uses are the loop's (set in its ``__init__``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from models.serialization import global_model_from_record
from runtime.model_registry.client import RegistryUnavailableError
from runtime.redis_outage import REDIS_AWAY
from schemas.signing import SignatureError
from streams.merger.lifecycle import Refusal, Rollback, Stored, decide, origin
from streams.merger.outbox import Outgoing
from streams.merger.rounds import Closed
from streams.merger.wire import WHOLE

log = logging.getLogger("streams.merger.loop")

SERVICE = "merger"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Steering:
    # the loop's, see MergerLoop.__init__
    merger: Any
    store: Any
    canary: Any
    producer: Any
    codec: Any
    topics: dict[str, str]
    source_verifier: Any
    controls_every_s: float
    _controls_due: float
    _handled: set[str]
    _told: set[tuple[str, int, str]]
    _unpublished: list[tuple[str, dict]]
    _outgoing: list[Outgoing]

    def _signed(self, record: dict[str, Any]) -> dict[str, Any]:  # the loop's
        raise NotImplementedError

    def _produce_global(self, key: str, record: dict[str, Any]) -> None:  # the loop's
        raise NotImplementedError

    # -- operator controls ----------------------------------------------------------------
    def _operator_controls(self) -> list[Closed]:
        """Rollbacks to publish now (see the module doc); [] while Redis lags behind."""
        now = time.monotonic()
        if self._unpublished or self._handled or now < self._controls_due:
            return []
        self._controls_due = now + self.controls_every_s
        out = []
        try:
            for name, tier in list(self.merger.tiers.items()):
                if tier.tier == "global" and tier.current is not None:
                    closed = self._control(name, tier.published)
                    if closed is not None:
                        out.append(closed)
        except (RegistryUnavailableError, *REDIS_AWAY) as e:
            log.warning("operator controls not read (Redis away?): %s", e)
        return out

    def _control(self, name: str, current: int) -> Closed | None:
        request = self.store.controls.rollback(name)
        quarantined = self.store.controls.quarantined(name)
        if request is None and not quarantined:
            return None
        records = self.store.history(name)
        stored = [
            Stored(int(r["version"]), r.get("held_back") is not None, r.get("restored_from"))
            for r in records
        ]
        ask = None if request is None else Rollback(request.to, request.reason)
        decision = decide(current, stored, quarantined, ask)
        if request is not None:
            self._handled.add(name)
        if decision is None:
            return None
        if isinstance(decision, Refusal):
            self._refuse(name, current, decision, once=request is None)
            return None
        (record,) = [r for r in records if int(r["version"]) == decision.source]
        if self.source_verifier is not None:
            try:
                self.source_verifier.check(record)
            except SignatureError as e:
                self._refuse(name, current, Refusal(decision.source, "unverified-source", str(e)))
                return None
        info = global_model_from_record(record)
        if self.canary is not None:  # an operator's word goes before the canaries'
            self.canary.pending.pop(name, None)
            self.merger.paused.discard(name)
        closed = self.merger.republish(
            name,
            info.summary,
            restored_from=decision.restored_from,
            reason=decision.reason,
            now_ms=_now_ms(),
        )
        self._event(name, decision.restored_from, closed.version, "rolled-back",
                    decision.reason_code, decision.reason)  # fmt: skip
        log.warning("rolled back %s to %s as version %s: %s", name, decision.restored_from,
                    closed.version, decision.reason)  # fmt: skip
        return closed

    # -- staged rollout ---------------------------------------------------------------
    def _resume_canaries(self) -> None:
        """A restart finds a version still with the canaries in the registry: judged again
        (the canaries' reports are cumulative, so their next summaries bring it all)."""
        if self.canary is None:
            return
        for name, tier in self.merger.tiers.items():
            data = self.store.client.get(self.store.keys.current(name))
            if tier.tier != "global" or data is None:
                continue
            record = self.codec.decode(data, expected="GlobalModel")
            if record.get("canary") is not None:
                version, parent = int(record["version"]), int(record["parent_version"])
                self.canary.start(name, version, parent, self.merger.edges_of(name))
                self.merger.paused.add(name)

    def _canary_verdicts(self) -> list[Closed]:
        """Promote or roll back versions the canaries have judged; [] while Redis lags."""
        if self.canary is None or self._unpublished or self._handled:
            return []
        out = []
        for name in list(self.canary.pending):
            decided = self.canary.verdict(name)
            if decided is None:
                continue
            pending, verdict = decided
            try:
                records = {int(r["version"]): r for r in self.store.history(name)}
            except (*REDIS_AWAY,) as e:  # judged again once Redis is back
                self.canary.pending[name] = pending
                log.warning("canary verdict on %s postponed (Redis away?): %s", name, e)
                continue
            self.merger.paused.discard(name)
            if verdict.action == "promote":
                self._promote(name, records[pending.version], verdict.reason)
                continue
            previous = records[pending.previous]
            stored = Stored(pending.previous, False, previous.get("restored_from"))
            closed = self.merger.republish(
                name,
                global_model_from_record(previous).summary,
                restored_from=origin(stored),
                reason=f"version {pending.version} rolled back: {verdict.reason}",
                now_ms=_now_ms(),
            )
            self._event(name, pending.version, closed.version, "rolled-back", "canary",
                        verdict.reason)  # fmt: skip
            log.warning("canary version %s of %s rolled back as %s: %s", pending.version, name,
                        closed.version, verdict.reason)  # fmt: skip
            out.append(closed)
        return out

    def _promote(self, name: str, record: dict[str, Any], reason: str) -> None:
        """The canaried version again, for every edge: the same number, ``canary`` null."""
        whole = self._signed(dict(record, canary=None, key_id=None, signature=None))
        self._produce_global(name + WHOLE, whole)
        self._unpublished.append((name, whole))
        self._event(name, int(record["version"]), int(record["version"]), "promoted", "canary",
                    reason)  # fmt: skip
        log.info("canary version %s of %s promoted: %s", record["version"], name, reason)

    def _refuse(self, name: str, current: int, refusal: Refusal, *, once: bool = False) -> None:
        told = (name, refusal.version, refusal.reason_code)
        if once and told in self._told:  # a standing quarantine is refused once, not every second
            return
        self._told.add(told)
        self._event(name, refusal.version, current, "rollback-refused",
                    refusal.reason_code, refusal.reason)  # fmt: skip
        log.warning("rollback of %s refused: %s", name, refusal.reason)

    def _event(
        self, name: str, version: int, published: int, action: str, code: str, reason: str
    ) -> None:
        event = {
            "model_name": name,
            "version": version,
            "published_version": published,
            "action": action,
            "reason_code": code,
            "reason": reason,
            "metrics": {},
            "service": SERVICE,
            "at": _now_ms(),
        }
        value = self.codec.encode("LifecycleEvent", event)
        self._outgoing.append(Outgoing(self.topics["lifecycle"], name.encode(), value))
