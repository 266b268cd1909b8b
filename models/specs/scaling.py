"""StandardScaler statistics as summary tensors, shared by the specs that scale.

Three tensors, one entry per feature: ``count`` (int64), ``mean`` and
``var`` (population variance, as River keeps it). They merge exactly by
Chan's formulas and come apart again the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from river import preprocessing

from models import river_adapter
from models.exact import guarded, merge_moments, unmerge_moments
from models.summary import Summary

__all__ = [
    "SCALER_AXES",
    "apply_scaler",
    "merge_scaler",
    "mix_scaler",
    "scaler_tensors",
    "unmerge_scaler",
]

SCALER_AXES: dict[str, tuple[int, ...]] = {"count": (0,), "mean": (0,), "var": (0,)}


def scaler_tensors(
    scaler: preprocessing.StandardScaler, features: Sequence[str] | None = None
) -> tuple[tuple[str, ...], dict[str, np.ndarray]]:
    """Features and the count/mean/var tensors of a running scaler."""
    names, counts, means, variances = river_adapter.get_scaler_state(scaler, features)
    return names, {"count": counts, "mean": means, "var": variances}


def apply_scaler(summary: Summary, scaler: preprocessing.StandardScaler) -> None:
    """Load the scaler statistics of ``summary`` into ``scaler``."""
    river_adapter.set_scaler_state(
        scaler,
        summary.features,
        summary.tensor("count"),
        summary.tensor("mean"),
        summary.tensor("var"),
    )


def _stack(summaries: Sequence[Summary], name: str) -> np.ndarray:
    return np.stack([s.tensor(name) for s in summaries])


def merge_scaler(
    summaries: Sequence[Summary], base: Summary | None = None
) -> dict[str, np.ndarray]:
    """Exact merge of aligned summaries' scaler statistics (plus ``base``'s)."""
    parts = [*summaries, base] if base is not None else list(summaries)
    count, mean, var = merge_moments(
        _stack(parts, "count"), _stack(parts, "mean"), _stack(parts, "var")
    )
    return {"count": count, "mean": mean, "var": var}


def unmerge_scaler(total: Summary, part: Summary) -> dict[str, np.ndarray]:
    """Statistics of the events in ``total`` that are not in ``part``."""
    count, mean, var = unmerge_moments(
        (total.tensor("count"), total.tensor("mean"), total.tensor("var")),
        (part.tensor("count"), part.tensor("mean"), part.tensor("var")),
    )
    return {"count": count, "mean": mean, "var": var}


@guarded
def mix_scaler(global_: Summary, local: Summary, alpha: float) -> dict[str, np.ndarray]:
    """Moments of the alpha-mixture of the two feature distributions.

    Blending is not merging: a global model built from a million events must
    not drown a local one by sheer count, so each side gets the weight alpha
    / 1 - alpha whatever its count (a feature only one side has seen takes
    that side's statistics). The count is the same mixture of both counts,
    rounded -- an *effective* count, used only for later merges.
    """
    counts = np.stack([global_.tensor("count"), local.tensor("count")]).astype(np.float64)
    seen = counts > 0
    weights = np.array([[alpha], [1.0 - alpha]]) * seen
    total = weights.sum(axis=0)
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
    means = np.stack([global_.tensor("mean"), local.tensor("mean")])
    variances = np.stack([global_.tensor("var"), local.tensor("var")])
    mean = (weights * means).sum(axis=0)
    var = (weights * (variances + (means - mean) ** 2)).sum(axis=0)
    count = np.rint((weights * counts).sum(axis=0)).astype(np.int64)
    count = np.where(seen.any(axis=0), np.maximum(count, 1), 0)
    return {"count": count, "mean": mean, "var": var}
