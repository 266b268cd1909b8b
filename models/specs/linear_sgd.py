"""Compiled sequential learning for ``StandardScaler | LogisticRegression(SGD)``.

River learns one event at a time through dicts (~25 us an event for eleven
features); the central learner needs a few microseconds. Mini-batch SGD
would be fast but is a *different model* (averaged gradients), and every
Prism guarantee -- exact restarts, edge == central maths, merges -- assumes
the model River would have learned. So this kernel replays River's own
per-event recurrences, in the same order, compiled with numba:

- scaler (``StandardScaler.learn_one``): ``n += 1``;
  ``mean += (x - mean_old) / n``; ``var += ((x - mean_old)(x - mean) - var) / n``;
- transform with the *updated* statistics (River's pipeline learns an
  unsupervised step, then transforms): ``(x - mean) / sqrt(var)``, 0 if var = 0;
- log-loss gradient on the logit (River's ``optim.losses.Log``, labels
  mapped to -1/+1, its +-18 shortcuts), clamped to ``clip_gradient``;
- intercept ``-= intercept_lr * g``; weights ``-= lr * (g * x_scaled + l2 * w)``
  for the features *present in the event* only (River masks the weights with
  the event's keys, so the L2 pull touches only those).

A feature absent from an event is NaN in ``X`` (finite values are
guaranteed upstream: the codec refuses NaN features). The kernel updates
its arrays in place and returns the new intercept; equality with River's
``learn_one`` loop is a test (tests/unit/models/test_linear_sgd.py).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["learn_scaled_logistic"]


@njit(cache=True, nogil=True)
def learn_scaled_logistic(  # noqa: PLR0913 - the state of two River estimators
    X: np.ndarray,
    y: np.ndarray,
    counts: np.ndarray,
    means: np.ndarray,
    variances: np.ndarray,
    weights: np.ndarray,
    intercept: float,
    lr: float,
    l2: float,
    intercept_lr: float,
    clip_gradient: float,
) -> float:
    n, d = X.shape
    scaled = np.zeros(d)
    for i in range(n):
        for j in range(d):
            xj = X[i, j]
            if xj != xj:  # NaN: not in this event
                continue
            counts[j] += 1
            old = means[j]
            means[j] = old + (xj - old) / counts[j]
            variances[j] = variances[j] + ((xj - old) * (xj - means[j]) - variances[j]) / counts[j]
        dot = 0.0
        for j in range(d):
            xj = X[i, j]
            if xj != xj:
                continue
            v = variances[j]
            s = (xj - means[j]) / v**0.5 if v != 0.0 else 0.0
            scaled[j] = s
            dot += weights[j] * s
        sign = 1.0 if y[i] else -1.0
        z = (dot + intercept) * sign
        if z > 18.0:
            g = math.exp(-z) * -sign
        elif z < -18.0:
            g = -sign
        else:
            g = -sign / (math.exp(z) + 1.0)
        g = min(max(g, -clip_gradient), clip_gradient)
        intercept -= intercept_lr * g
        for j in range(d):
            if X[i, j] != X[i, j]:
                continue
            weights[j] -= lr * (g * scaled[j] + l2 * weights[j])
    return intercept
