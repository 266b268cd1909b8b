"""Global knowledge at the edge: blending for scoring, reconciling for learning.

An edge node holds two models: the latest global one (what the fleet knows)
and its local one (what this machine or store looks like). Non-IID data makes
the global model worse than a personalised one at some nodes, so the edge

- **scores** with :func:`blend` -- a model between the two, per kind:
  ``linear`` interpolates the two logits exactly (rewritten on raw features,
  so the two scalers need not agree); ``hst`` mixes the scalers and averages
  the reference-window mass profiles; ``gauss`` takes the Gaussian matching
  the mean and covariance of the mixture. Each side weighs alpha / 1 - alpha
  whatever its sample count, so a global model built from millions of events
  does not drown the local one;
- **learns** from a model chosen by :func:`reconcile` when a new global model
  arrives;
- **reports** with :func:`since` when it publishes increments rather than
  totals (``merge(..., accumulate=True)``).
"""

from __future__ import annotations

from dataclasses import replace

from models.errors import IncompatibleSummariesError, InvalidSummaryError, ModelError
from models.specs import get_spec
from models.specs.algebra import SummaryAlgebra
from models.summary import Summary

__all__ = ["DEFAULT_RULE", "RULES", "blend", "reconcile", "since"]

RULES = ("replace", "blend", "delta")
DEFAULT_RULE = "delta"


def _algebra_of(*summaries: Summary | None) -> SummaryAlgebra:
    present = [s for s in summaries if s is not None]
    for s in present:
        if not isinstance(s, Summary):
            raise InvalidSummaryError(f"expected a Summary, got {type(s).__name__}")
    first = present[0]
    for s in present[1:]:
        if (s.model_name, s.kind) != (first.model_name, first.kind):
            raise IncompatibleSummariesError(
                f"cannot combine {s.model_name!r} with {first.model_name!r}"
            )
    algebra = get_spec(first.model_name).algebra
    for s in present:
        algebra.check(s)
    return algebra


def blend(global_summary: Summary, local_summary: Summary, alpha: float) -> Summary:
    """A summary between ``local_summary`` (alpha=0) and ``global_summary`` (alpha=1).

    The result keeps the local node's provenance and the global version as
    its base; apply it to a scoring model with ``spec.load``.

    Examples
    --------
    >>> import numpy as np
    >>> from models.specs import get_spec
    >>> spec = get_spec("iot-gauss")
    >>> mk = lambda m: Summary("iot-gauss", "gauss", ("t",), 10,
    ...     {"mean": np.array([m]), "cov": np.array([[1.0]])}, spec.params)
    >>> blend(mk(0.0), mk(4.0), 0.25).tensors["mean"].tolist()
    [3.0]
    """
    return _algebra_of(global_summary, local_summary).blend(global_summary, local_summary, alpha)


def since(local: Summary, base: Summary | None) -> Summary:
    """What ``local`` learned after it was ``base``: exact statistics minus base's.

    Learned parts (weights) and HST windows are state, not totals, and stay
    as they are. Raises :class:`IncompatibleSummariesError` when ``local``
    holds fewer samples than ``base`` -- it was not trained from it.
    """
    if base is None:
        return local
    algebra = _algebra_of(local, base)
    try:
        return algebra.unmerge_exact(local, base)
    except InvalidSummaryError as e:
        raise IncompatibleSummariesError(
            f"node {local.node_id!r}: the local model was not trained from this base ({e})"
        ) from e


def reconcile(
    new_global: Summary,
    local: Summary,
    old_global: Summary | None = None,
    rule: str = DEFAULT_RULE,
    *,
    alpha: float = 0.5,
) -> Summary:
    """The summary the local learner continues from when ``new_global`` arrives.

    Rules
    -----
    ``"delta"`` (default)
        ``new_global`` plus what the local model learned since
        ``old_global``: exact statistics ``new (+) (local (-) old)``; weights
        ``new + (local - old)`` on coordinates the node has seen; HST keeps
        the global reference window and the local current window. Nothing
        learned locally is lost, the fleet's progress is adopted, and it
        reduces to ``"replace"`` when the node learned nothing new. Pass as
        ``old_global`` the state the node last reported from, so no event is
        counted twice in exact statistics; ``None`` means the local model
        started from scratch.
    ``"replace"``
        Plain FedAvg: adopt ``new_global``; local progress since the last
        summary is dropped.
    ``"blend"``
        ``blend(new_global, local, alpha)``: keep a personalised model.

    Every rule keeps the local node's id and sequence and takes the new
    global's version as base.
    """
    if rule not in RULES:
        raise ModelError(f"unknown reconcile rule {rule!r}; choose one of {RULES}")
    algebra = _algebra_of(new_global, local, old_global)
    if rule == "replace":
        out = new_global
    elif rule == "blend":
        out = algebra.blend(new_global, local, alpha)
    else:
        try:
            out = algebra.rebase(new_global, local, old_global)
        except InvalidSummaryError as e:
            raise IncompatibleSummariesError(
                f"node {local.node_id!r}: cannot re-apply the local delta ({e})"
            ) from e
    return replace(
        out, node_id=local.node_id, sequence=local.sequence, base_version=new_global.base_version
    )
