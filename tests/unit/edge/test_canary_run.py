"""A canary edge's paired measurement of the new version against the previous one."""

from __future__ import annotations

import numpy as np

from edge_agents.canary import CanaryRun
from models.canary import log_loss
from models.specs import get_spec

SPEC = get_spec("fraud-linear")


def trained(flip: bool) -> object:
    rng, model = np.random.default_rng(1), SPEC.new_model()
    for _ in range(300):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.4) != flip)
    return SPEC.summarize(model)


def test_inline_and_late_labels_both_count_each_event_once_for_both_versions() -> None:
    run = CanaryRun(SPEC, 7, trained(flip=True), trained(flip=False))
    x = {"amount": 5.0, "hour": 12.0}
    run.score("e1", x, True)  # inline label
    run.score("e2", x, None)  # label comes later
    run.label("e2", True)
    run.label("e2", True)  # a repeated label does not count twice
    run.label("unknown", False)
    assert run.loss.n == 2 and run.loss.version == 7
    p_new = SPEC.score_one(SPEC.load(trained(flip=True)), x)
    assert run.loss.new == 2 * log_loss(p_new, True)
    assert run.loss.new > run.loss.previous  # the flipped version is worse on a clear fraud
