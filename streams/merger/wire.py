"""What a closed round puts on the ``global-model`` topic, and what the registry keeps.

One rule, used by the merge job (:mod:`streams.merger.loop`) and by ``prism
compare``'s byte count, so the two cannot drift apart:

- the registry keeps every version whole, with its lineage (contributors,
  exclusions) and round metrics (holdout scores among them); a version the
  quality gate held back is in its history only, with the reason;
- a version that travels as a delta goes under the model's key, layout by id,
  with its lineage but without the round metrics: sites do not use them, they
  are a quarter of a linear model's delta record, and the registry and the
  ``@whole`` records keep them;
- a whole version goes under ``<model>@whole`` (compaction keeps it: a fresh
  node starts its chain there) when deltas are on or its layout is new to the
  topic; with deltas off, every version also goes under the model's key by id.
"""

from __future__ import annotations

from typing import Any

from models.serialization import global_model_record
from streams.merger.rounds import Closed

__all__ = ["WHOLE", "registry_record", "topic_records"]

#: suffix of the key under which whole versions go (``fraud-linear@whole``)
WHOLE = "@whole"


def registry_record(c: Closed, quantize: str | None) -> dict[str, Any]:
    """The whole version, with its layout, lineage and metrics: what Redis keeps; a held-back
    version says why (``held_back``) and goes nowhere else."""
    record = _record(c, quantize, with_layout=True, metrics=True)
    if c.held is not None:
        record["held_back"] = c.held
    return record


def topic_records(
    c: Closed, layout: int, announced: dict[str, int], *, quantize: str | None, deltas: bool
) -> list[tuple[str, dict[str, Any]]]:
    """(key, record) pairs to produce for ``c``, in order; ``announced`` (model -> the
    layout id last published whole) is updated. None for a held-back version."""
    if c.held is not None:
        return []
    if c.delta is not None:  # the chain: from the previous version, layout by id
        return [(c.name, _record(c, quantize, with_layout=False, metrics=False))]
    out = []
    if announced.get(c.name) != layout or deltas:
        announced[c.name] = layout
        out.append((c.name + WHOLE, registry_record(c, quantize)))
    if not deltas:
        out.append((c.name, _record(c, quantize, with_layout=False, metrics=True)))
    return out


def _record(c: Closed, quantize: str | None, *, with_layout: bool, metrics: bool) -> dict[str, Any]:
    return global_model_record(
        c.result.summary,
        version=c.version,
        parent_version=c.parent_version,
        strategy=c.strategy,
        created_at_ms=c.created_at_ms,
        contributors=c.result.contributors,
        excluded=c.result.excluded,
        metrics=c.metrics if metrics else None,
        quantize=quantize,
        with_layout=with_layout,
        delta=None if with_layout else c.delta,
        restored_from=c.restored_from,
        reason=c.reason,
        canary=c.canary,
    )
