"""The quality gate: should a new global reach the sites, judged on the holdout?

Framework-free like :mod:`streams.merger.rounds`, which asks :class:`Judge`
about every closed global round before it makes the version current.

The candidate and the published model are scored on the *same* sample at
the moment of the decision (the published one's score is cached per sample
revision), never a candidate on today's sample against a number stored
weeks ago on another one. A candidate is held back when it is worse than the
published model by more than ``margin`` (AUC points, or log loss when the
sample has one class). With fewer than ``min_events`` labelled events the
sample is too small to tell noise from harm, and everything is published
with its score: a gate that holds on noise would freeze the fleet's model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from models.holdout import HoldoutScore, Reservoir, score_holdout
from models.specs import get_spec
from models.summary import Summary

__all__ = ["Judge", "Judgement", "QualityGate"]


@dataclass(frozen=True)
class QualityGate:
    margin: float
    min_events: int = 50

    def __post_init__(self) -> None:
        if not self.margin >= 0:
            raise ValueError(f"the quality gate's margin must be >= 0, got {self.margin}")
        if self.min_events < 1:
            raise ValueError(f"the quality gate needs at least 1 event, got {self.min_events}")

    def held_because(self, candidate: HoldoutScore, published: HoldoutScore | None) -> str | None:
        """Why ``candidate`` must not be published, or None: it may."""
        if published is None or candidate.n < self.min_events:
            return None
        worse = candidate.worse_by(published)
        if worse <= self.margin:
            return None
        return (
            f"holdout {candidate.metric} {candidate.value:.4f} is {worse:.4f} worse than the "
            f"published version's {published.value:.4f} on the same {candidate.n} events "
            f"(margin {self.margin:g})"
        )


@dataclass(frozen=True)
class Judgement:
    metrics: Mapping[str, float] = field(default_factory=dict)  # go into the version's record
    held: str | None = None  # the reason it is held back; None: publish


class Judge:
    """Scores candidates on the holdout of their task and applies the gate (if any).

    ``holdouts`` maps a task (``fraud``, ``iot``) to its reservoir: a model is
    judged on the labelled events of its own task.
    """

    def __init__(self, holdouts: Mapping[str, Reservoir], gate: QualityGate | None = None) -> None:
        self.holdouts, self.gate = holdouts, gate
        # name -> ((published version, sample revision), its score): scored once per sample
        self._published: dict[str, tuple[tuple[int, int], HoldoutScore | None]] = {}

    def judge(
        self, name: str, candidate: Summary, published: Summary | None, published_version: int
    ) -> Judgement:
        spec = get_spec(candidate.model_name)
        reservoir = self.holdouts.get(spec.task)
        if reservoir is None or not len(reservoir):
            return Judgement()
        score = score_holdout(spec, candidate, reservoir)
        assert score is not None  # the reservoir is not empty
        metrics = score.as_metrics()
        if self.gate is None or published is None:
            return Judgement(metrics)
        key = (published_version, reservoir.revision)
        cached = self._published.get(name)
        if cached is None or cached[0] != key:
            cached = self._published[name] = (key, score_holdout(spec, published, reservoir))
        baseline = cached[1]
        if baseline is not None:
            metrics[f"published_{baseline.metric}"] = baseline.value
        return Judgement(metrics, self.gate.held_because(score, baseline))
