"""A seeded fault schedule: which target gets which fault, when, for how long.

Pure and deterministic, so a failing run is replayed from its seed and
parameters alone. Faults arrive as a Poisson process (``mean_gap`` seconds
apart on average) inside ``[warmup, duration - quiet]``; each picks a target
that is free then, one of the kinds that target allows, and a duration.
Two guarantees make a schedule something a runner can apply faithfully:

- a target never has two faults at once, and gets ``recover`` seconds after
  one ends before the next (a restarted process must be up again);
- at most one infrastructure fault (broker or Redis) at a time, and at most
  ``max_concurrent`` faults of any kind at once.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

KINDS = ("kill9", "sigterm", "pause", "link-cut")
INFRA = frozenset({"broker", "redis"})

__all__ = ["INFRA", "KINDS", "Fault", "make_schedule", "dumps", "loads"]


@dataclass(frozen=True, order=True)
class Fault:
    """``kind`` applied to ``target`` at ``at`` s from the start, lifted ``duration`` s later.

    kill9 / sigterm: the target is down for ``duration`` s, then started again;
    pause: SIGSTOP, SIGCONT after ``duration``; link-cut: an edge off the
    network for ``duration``.
    """

    at: float
    target: str
    kind: str
    duration: float

    @property
    def end(self) -> float:
        return round(self.at + self.duration, 3)  # on the schedule's millisecond grid


def make_schedule(
    seed: int,
    *,
    duration: float,
    targets: Mapping[str, Sequence[str]],
    mean_gap: float = 8.0,
    fault_s: tuple[float, float] = (1.0, 6.0),
    warmup: float = 10.0,
    quiet: float = 10.0,
    recover: float = 5.0,
    max_concurrent: int = 2,
) -> list[Fault]:
    """The faults of one run, sorted by time; ``targets`` maps a target to its allowed kinds.

    >>> a = make_schedule(7, duration=60, targets={"central-0": ["kill9", "pause"]})
    >>> a == make_schedule(7, duration=60, targets={"central-0": ["kill9", "pause"]})
    True
    >>> all(10 <= f.at and f.end <= 50 for f in a)
    True
    """
    if duration <= 0 or mean_gap <= 0 or max_concurrent < 1:
        raise ValueError("duration, mean_gap and max_concurrent must be positive")
    lo, hi = fault_s
    if not 0 < lo <= hi:
        raise ValueError(f"fault_s must be 0 < min <= max, got {fault_s}")
    for target, kinds in targets.items():
        if not kinds or not set(kinds) <= set(KINDS):
            raise ValueError(f"{target}: kinds must be a non-empty subset of {KINDS}")
    rng = random.Random(seed)
    names = sorted(targets)
    free_at = dict.fromkeys(names, 0.0)
    out: list[Fault] = []
    running: list[Fault] = []
    t, last = warmup, duration - quiet
    while names:
        t += rng.expovariate(1.0 / mean_gap)
        length = round(rng.uniform(lo, hi), 3)
        if t + length > last:
            break
        at = round(t, 3)  # decided on the grid the fault is written on, so checks agree
        running = [f for f in running if f.end > at]
        infra_busy = any(f.target in INFRA for f in running)
        ready = [n for n in names if free_at[n] <= at and not (n in INFRA and infra_busy)]
        if not ready or len(running) >= max_concurrent:
            continue
        target = rng.choice(ready)
        fault = Fault(at, target, rng.choice(sorted(targets[target])), length)
        out.append(fault)
        running.append(fault)
        free_at[target] = fault.end + recover
    return out


def dumps(faults: Sequence[Fault]) -> str:
    """The schedule as JSON lines, one fault each (printed when an invariant fails)."""
    return "\n".join(json.dumps(asdict(f), sort_keys=True) for f in faults)


def loads(text: str) -> list[Fault]:
    """The inverse of :func:`dumps`."""
    return [Fault(**json.loads(line)) for line in text.splitlines() if line.strip()]
