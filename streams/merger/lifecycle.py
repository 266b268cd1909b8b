"""Operator controls of a model's lifecycle: what the merger does about them (pure).

Operators write intents into the registry (``prism models rollback`` and
``quarantine``, :mod:`runtime.model_registry.lifecycle`); the merger, the
only publisher of globals, reads them between batches and asks
:func:`decide` what to publish. A rollback republishes a stored version's
whole model under the *next* version number with ``restored_from``: version
numbers only grow, so the edges adopt it by their normal path and their
replay check (an older version sent again is refused) still holds.

Quarantine is a list of versions that must never be served again: a
rollback to one is refused, and when the current version (or the version it
restores) is quarantined the merger rolls back by itself to the newest
published version that is not. The decision is pure: the clock, Redis and
Kafka stay in the loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Refusal", "Restore", "Rollback", "Stored", "decide", "origin"]


@dataclass(frozen=True)
class Stored:
    """What the registry history says of one version."""

    version: int
    held_back: bool = False
    restored_from: int | None = None


@dataclass(frozen=True)
class Rollback:
    """An operator's request: make ``to``'s model current again."""

    to: int
    reason: str = ""


@dataclass(frozen=True)
class Restore:
    """Republish history version ``source`` (a model whose original is ``restored_from``)."""

    source: int
    restored_from: int
    reason_code: str  # rollback | quarantine
    reason: str


@dataclass(frozen=True)
class Refusal:
    version: int
    reason_code: str
    reason: str


def origin(v: Stored) -> int:
    """The version whose model ``v`` is: itself, or the one it restores."""
    return v.version if v.restored_from is None else v.restored_from


def decide(
    current: int,
    history: Sequence[Stored],
    quarantined: Iterable[int],
    request: Rollback | None = None,
) -> Restore | Refusal | None:
    """What the merger must publish now (a :class:`Restore`), refuse, or None: nothing.

    >>> h = [Stored(3, restored_from=1), Stored(2), Stored(1)]
    >>> d = decide(3, h, {1})  # version 3 serves 1's model, and 1 is quarantined
    >>> d.source, d.reason_code
    (2, 'quarantine')
    """
    bad = set(quarantined)
    by_version = {v.version: v for v in history}
    now = by_version.get(current)
    if request is not None:
        return _rollback(request, now, by_version, bad)
    if now is None or (current not in bad and origin(now) not in bad):
        return None
    for v in sorted(history, key=lambda s: -s.version):  # the newest good one
        if not v.held_back and v.version not in bad and origin(v) not in bad:
            return Restore(v.version, origin(v), "quarantine", _quarantine_reason(now))
    return Refusal(current, "nothing-to-restore", _nothing_left(now))


def _rollback(
    request: Rollback, now: Stored | None, by_version: dict[int, Stored], bad: set[int]
) -> Restore | Refusal | None:
    target = by_version.get(request.to)
    if request.to in bad:
        return Refusal(request.to, "quarantined", f"version {request.to} is quarantined")
    if target is None:
        known = ", ".join(str(v) for v in sorted(by_version, reverse=True)) or "none"
        return Refusal(
            request.to,
            "unknown-version",
            f"version {request.to} is not in the registry history (kept: {known})",
        )
    if target.held_back:
        return Refusal(request.to, "held-back", f"version {request.to} was never published")
    if origin(target) in bad:
        why = f"version {request.to} restores {origin(target)}, quarantined"
        return Refusal(request.to, "quarantined", why)
    if now is not None and origin(now) == origin(target):
        return None  # that model is current already
    why = f"rollback to {request.to} by an operator"
    if request.reason:
        why += f": {request.reason}"
    return Restore(target.version, origin(target), "rollback", why)


def _quarantine_reason(now: Stored) -> str:
    which = now.version if now.restored_from is None else f"{now.version} ({origin(now)})"
    return f"current version {which} is quarantined: rolled back to the newest one that is not"


def _nothing_left(now: Stored) -> str:
    return (
        f"current version {now.version} is quarantined and the history holds no published "
        "version that is not: the sites keep it until a new round publishes one"
    )
