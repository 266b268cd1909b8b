"""One node's models, framework-free: score with the best model, learn, cut increments.

An edge node keeps three summaries (all of :mod:`models`, nothing of its own):

- ``local``: its own incremental model, trained on every labelled event;
- ``global``: the latest global model it adopted, with its version and age;
- ``baseline``: the state the node last *accounted for* -- the last summary
  it sent, or the global it adopted (which already holds what the merger
  counted). ``since(local, baseline)`` is exactly what the node learned and
  has not sent, so consecutive increments cover disjoint stretches of its
  stream and the merger counts every event once.

Scoring picks, per event: the blend of a fresh global with the local model
(``source="blend"``, or ``"global"`` when ``blend_alpha`` is 1), else the
local model alone -- the *fallback* -- when there is no global model, it is
older than ``global_max_age_s``, or the node is cut off. The blended model is
rebuilt when a global arrives and every ``refresh_every`` learned events, never
inside a score call, so single-event scoring stays a plain ``score_one``.

No Kafka, SQLite or clock of its own (``now_ms`` is passed in): every rule
here is unit-tested directly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from models.errors import ModelError
from models.personalize import RULES, blend, reconcile, since
from models.privacy import gaussian_mechanism
from models.specs import get_spec
from models.specs.base import ModelSpec
from models.summary import Summary

__all__ = ["EdgeLearner", "EdgePolicy", "EdgeState", "Scored"]

SOURCES = ("global", "blend", "local")


@dataclass(frozen=True, kw_only=True)
class EdgePolicy:
    """How a node scores, adopts global models and protects what it sends."""

    blend_alpha: float = 0.5
    global_max_age_s: float = 600.0
    reconcile_rule: str = "delta"
    refresh_every: int = 100
    max_pending: int = 100_000
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.blend_alpha <= 1.0:
            raise ModelError(f"blend alpha must be in [0, 1], got {self.blend_alpha}")
        if not self.global_max_age_s > 0:
            raise ModelError("the global model's maximum age must be > 0 seconds")
        if self.reconcile_rule not in RULES:
            raise ModelError(f"reconcile rule must be one of {RULES}, got {self.reconcile_rule!r}")
        if self.refresh_every < 1 or self.max_pending < 1:
            raise ModelError("refresh_every and max_pending must be >= 1")
        if self.dp_clip is not None and not self.dp_clip > 0:
            raise ModelError(f"the DP clipping norm must be > 0, got {self.dp_clip}")
        if not (math.isfinite(self.dp_noise) and self.dp_noise >= 0):
            raise ModelError(f"the DP noise multiplier must be >= 0, got {self.dp_noise}")
        if self.dp_noise > 0 and self.dp_clip is None:
            raise ModelError("DP noise needs a clipping norm (--dp-clip)")


@dataclass(slots=True)
class EdgeState:
    """Everything a restart needs, as summaries and numbers (stored by the outbox)."""

    local: Summary
    baseline: Summary | None = None
    global_: Summary | None = None
    global_version: int = 0
    global_created_ms: int = 0
    sequence: int = 0
    pending: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scored:
    score: float
    source: str
    version: int


class EdgeLearner:
    """The node's local, global and blended models and the rules between them."""

    def __init__(self, spec_name: str, node_id: str, policy: EdgePolicy) -> None:
        self.spec: ModelSpec = get_spec(spec_name)
        self.node_id, self.policy = node_id, policy
        self.local = self.spec.new_model()
        self.baseline: Summary | None = None
        self.global_: Summary | None = None
        self.global_version = self.global_created_ms = 0
        self.sequence = 0
        self.pending: OrderedDict[str, dict[str, float]] = OrderedDict()
        self.counts = {"learned": 0, "expired": 0, "unknown-label": 0, "adopted": 0}
        self.learned_since_cut = 0
        self._global_model: Any = None
        self._blended: Any = None
        self._since_refresh = 0
        self._rng = np.random.default_rng([policy.dp_seed, _stable(node_id)])
        if policy.dp_clip is not None and not self._has_learned_part():
            raise ModelError(
                f"{spec_name!r} has no learned weights to clip: differential privacy here "
                "protects learned parameters; its exact statistics are sums of counts"
            )

    # -- scoring --------------------------------------------------------------
    def fresh(self, now_ms: int, linked: bool) -> bool:
        """True when a global model may be used: present, young enough, node linked."""
        if self.global_ is None or not linked:
            return False
        return now_ms - self.global_created_ms <= self.policy.global_max_age_s * 1000

    def score(self, x: Mapping[str, float], now_ms: int, linked: bool) -> Scored:
        """Score with the best model available; ``source`` says which one it was."""
        if self.fresh(now_ms, linked):
            if self.policy.blend_alpha >= 1.0:
                return Scored(
                    self.spec.score_one(self._global_model, x), "global", self.global_version
                )
            if self.policy.blend_alpha > 0.0:
                return Scored(self.spec.score_one(self._blended, x), "blend", self.global_version)
        return Scored(self.spec.score_one(self.local, x), "local", self.global_version)

    # -- learning -------------------------------------------------------------
    def observe(self, event_id: str, x: Mapping[str, float], label: bool | None) -> bool:
        """After scoring: learn now if the label is known (or not needed), else wait.

        Returns True when the event was learned.
        """
        if label is not None or not self.spec.supervised:
            self.learn(x, label)
            return True
        self.pending[event_id] = dict(x)
        if len(self.pending) > self.policy.max_pending:
            self.pending.popitem(last=False)
            self.counts["expired"] += 1
        return False

    def label(self, event_id: str, label: bool) -> bool:
        """A late label: learn its waiting event; unknown ids are counted, not kept.

        Unsupervised specs learned the event when it came: the label is ignored.
        """
        if not self.spec.supervised:
            return False
        x = self.pending.pop(event_id, None)
        if x is None:
            self.counts["unknown-label"] += 1
            return False
        self.learn(x, label)
        return True

    def learn(self, x: Mapping[str, float], y: bool | None) -> None:
        self.spec.learn_one(self.local, x, y)
        self.counts["learned"] += 1
        self.learned_since_cut += 1
        self._since_refresh += 1
        if self._since_refresh >= self.policy.refresh_every and self.global_ is not None:
            self._refresh()

    # -- global models --------------------------------------------------------
    def adopt(self, summary: Summary, version: int, created_ms: int) -> bool:
        """Take a newer global model: reconcile the local one with it (models' rule).

        With the ``delta`` rule the unsent progress is re-applied on top of the
        new global, and the new global becomes the baseline. Other rules change
        the local model in ways an increment cannot express, so the caller cuts
        the unsent progress first (:meth:`needs_cut_before_adopt`) and the
        baseline becomes the reconciled model itself.
        """
        if version <= self.global_version:
            return False
        self.spec.check(summary)
        stamped = summary.with_provenance(node_id="global", sequence=0, base_version=version)
        local = self._local_summary()
        rule = self.policy.reconcile_rule
        merged = reconcile(stamped, local, self.baseline, rule, alpha=self.policy.blend_alpha)
        self.local = self.spec.load(merged)
        self.baseline = stamped if rule == "delta" else self._local_summary()
        self.global_, self.global_version, self.global_created_ms = stamped, version, created_ms
        self._global_model = self.spec.load(stamped)
        self.counts["adopted"] += 1
        self._refresh()
        return True

    def needs_cut_before_adopt(self) -> bool:
        return self.policy.reconcile_rule != "delta" and self.learned_since_cut > 0

    # -- increments -----------------------------------------------------------
    def cut(self) -> Summary | None:
        """The next increment (what was learned since the baseline), or None if nothing.

        Stamped with the node id, the next sequence number and the adopted
        global version; the baseline moves to the current local model.
        """
        if self.learned_since_cut == 0:
            return None
        local = self._local_summary()
        base = self.baseline
        if base is not None and base.features != local.features:
            base = self.spec.align(base, self.spec.union_features([local, base]))
            local = self.spec.align(local, base.features)
        increment = since(local, base)
        if increment.n_samples == 0:
            self.learned_since_cut = 0
            return None
        if self.policy.dp_clip is not None:
            increment = self._privatize(increment, base)
        self.sequence += 1
        self.baseline = local
        self.learned_since_cut = 0
        return increment.with_provenance(
            node_id=self.node_id, sequence=self.sequence, base_version=self.global_version
        )

    def _privatize(self, increment: Summary, base: Summary | None) -> Summary:
        """Clip the weights' movement since the baseline and add Gaussian noise."""
        vector = self.spec.learned_vector(increment)
        start = self.spec.learned_vector(base) if base is not None else np.zeros_like(vector)
        noisy = gaussian_mechanism(
            vector - start, self.policy.dp_clip or 0.0, self.policy.dp_noise, self._rng
        )
        return self.spec.with_learned_vector(increment, start + noisy)

    # -- state ----------------------------------------------------------------
    def state(self) -> EdgeState:
        return EdgeState(
            local=self._local_summary(),
            baseline=self.baseline,
            global_=self.global_,
            global_version=self.global_version,
            global_created_ms=self.global_created_ms,
            sequence=self.sequence,
            pending=dict(self.pending),
        )

    def restore(self, state: EdgeState) -> None:
        self.local = self.spec.load(state.local)
        self.baseline, self.global_ = state.baseline, state.global_
        self.global_version, self.global_created_ms = state.global_version, state.global_created_ms
        self.sequence = state.sequence
        self.pending = OrderedDict(state.pending)
        if state.baseline is not None:
            self.learned_since_cut = state.local.n_samples - state.baseline.n_samples
        else:
            self.learned_since_cut = state.local.n_samples
        if self.global_ is not None:
            self._global_model = self.spec.load(self.global_)
            self._refresh()

    def _local_summary(self) -> Summary:
        return replace(self.spec.summarize(self.local), node_id=self.node_id)

    def _refresh(self) -> None:
        self._since_refresh = 0
        if self.global_ is None or not 0.0 < self.policy.blend_alpha < 1.0:
            return
        mixed = blend(self.global_, self._local_summary(), self.policy.blend_alpha)
        self._blended = self.spec.load(mixed)

    def _has_learned_part(self) -> bool:
        return self.spec.learned_vector(self.spec.summarize(self.spec.new_model())).size > 0


def _stable(text: str) -> int:
    """A process-independent integer of ``text`` (``hash`` is salted per process)."""
    return int.from_bytes(text.encode()[:16].ljust(16, b"\0"), "little") % (2**63)
