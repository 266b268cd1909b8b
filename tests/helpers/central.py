"""The central learner's reference: each partition learned in-process from what is in Kafka.

Shared by the tests that restart services or infrastructure under a central
worker (``integration/test_central.py``, the broker and Redis restart tests)
and by ``bench/chaos``: a worker's checkpoint must equal this uninterrupted
replay to 1e-9, so nothing was learned twice or skipped.
"""

from __future__ import annotations

import numpy as np

from helpers.services import decoded
from models.serialization import state_to_summary
from models.specs import get_spec
from runtime.settings import Settings
from streams.central.partition import EventIn, LabelIn, PartitionLearner


def reference_models(settings: Settings) -> dict[int, PartitionLearner]:
    """Each partition learned in-process from what is in Kafka: the order the worker must match."""
    spec, boot = get_spec("fraud-linear"), settings.kafka_bootstrap or ""
    tx, lb = settings.topic("transactions"), settings.topic("labels")
    out = {p: PartitionLearner(spec, p, events_topic=tx, labels_topic=lb) for p in range(3)}
    for p, o, r in decoded(boot, tx):
        out[p].take_events([EventIn(o, r, b"")])
    for p, o, r in decoded(boot, lb):
        out[p].take_labels([LabelIn(o, r)])
    return out


def assert_checkpoint_matches(cp: dict, ref: PartitionLearner) -> None:
    got = state_to_summary(cp["state"])
    want = ref.spec.summarize(ref.model)
    assert got.n_samples == want.n_samples == ref.counters["learned"]
    assert got.features == want.features
    for name, array in want.tensors.items():
        np.testing.assert_allclose(got.tensor(name), array, rtol=0, atol=1e-9, err_msg=name)
