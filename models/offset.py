"""A site's logit offset on a shared model's probabilities: label-shift correction.

A global model is fit to the fleet's mix of labels. A site whose share of
positives differs (label skew: one store sees more fraud, one class is rare
at one site) gets probabilities that are right in their ranking within the
site but off by a constant in log-odds: under a pure prior shift
``logit p_site(y|x) = logit p_global(y|x) + logit pi_site - logit pi_global``
(Saerens, Latinne & Decaestecker, 2002). :class:`LogitOffset` learns that
constant from the site's own labels -- the maximum a posteriori intercept of a
logistic model whose offset is the global's logit, with a N(0, 1/prior)
prior, by online Newton steps -- so it needs no fleet-wide label rate and
moves less with each label as evidence builds up.

Pure, no I/O: the state is :meth:`state` / :meth:`load_state` as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from models.errors import ModelError

__all__ = ["LogitOffset"]

_LIMIT = 12.0  # |offset| bound: beyond it probabilities round to 0 or 1 anyway


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class LogitOffset:
    """One learned log-odds offset for a site, applied to a shared model's probability.

    Examples
    --------
    >>> off = LogitOffset()
    >>> for i in range(400):  # the site has 4 positives in 5; the global says 1 in 2
    ...     off.update(0.5, i % 5 != 0)
    >>> round(off.apply(0.5), 2)
    0.8
    """

    def __init__(self, *, prior: float = 1.0) -> None:
        if not (math.isfinite(prior) and prior > 0):
            raise ModelError(f"the offset's prior precision must be > 0, got {prior}")
        self.offset = 0.0
        self.curvature = prior  # prior precision plus the observed Fisher information

    def apply(self, p: float) -> float:
        z = _logit(p) + self.offset
        return 1.0 / (1.0 + math.exp(-z))

    def update(self, p: float, y: bool) -> None:
        """One Newton step on the label ``y`` of an event the shared model scored ``p``."""
        q = self.apply(p)
        self.curvature += q * (1.0 - q)
        step = (q - float(y)) / self.curvature
        self.offset = min(max(self.offset - step, -_LIMIT), _LIMIT)

    def state(self) -> dict[str, Any]:
        return {"offset": self.offset, "curvature": self.curvature}

    def load_state(self, state: Mapping[str, Any]) -> None:
        offset, curvature = float(state["offset"]), float(state["curvature"])
        if not (math.isfinite(offset) and math.isfinite(curvature) and curvature > 0):
            raise ModelError(f"saved logit offset is not usable: {dict(state)}")
        self.offset, self.curvature = max(min(offset, _LIMIT), -_LIMIT), curvature
