"""What the merge job publishes per version (streams/merger/wire.py): the topic's
records as a node reads them, and the registry's whole copy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from models.packing import layout_of
from models.serialization import global_model_from_record
from models.specs import get_spec
from schemas import Codec
from streams.merger.rounds import Merger, MergerConfig, Update
from streams.merger.wire import WHOLE, registry_record, topic_records

CODEC = Codec()
SPEC = get_spec("fraud-linear")


def update(seq: int) -> Update:
    rng, model = np.random.default_rng(seq), SPEC.new_model()
    for _ in range(40):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.5))
    s = SPEC.summarize(model).with_provenance(node_id="a", sequence=seq, base_version=seq - 1)
    return Update(replace(s), offset=seq, partition=0)


def rounds(n: int, **kw):
    m = Merger(MergerConfig(round_size=1, whole_every=4, **kw))
    out = []
    for seq in range(1, n + 1):
        m.offer(update(seq), now_ms=seq)
        out += m.close_due(now_ms=seq)
    return out


def test_deltas_travel_without_round_metrics_and_the_chain_rebuilds_every_version() -> None:
    announced: dict[str, int] = {}
    held = None
    for c in rounds(6):
        layout = layout_of(c.result.summary).id
        records = topic_records(c, layout, announced, quantize="float32", deltas=True)
        assert len(records) == 1
        ((key, record),) = records
        whole = registry_record(c, "float32")
        assert whole["metrics"] and whole["contributors"]  # the registry keeps the round's story
        if c.delta is None:
            assert key == c.name + WHOLE and record == whole
        else:
            assert key == c.name and record["delta_from"] == c.version - 1
            assert record["metrics"] == {} and record["contributors"] == whole["contributors"]
        info = global_model_from_record(
            CODEC.decode(CODEC.encode("GlobalModel", record)), held=held
        )
        kept = global_model_from_record(CODEC.decode(CODEC.encode("GlobalModel", whole)))
        bound = whole["state"]["packed"]["max_error"]
        for name, tensor in c.result.summary.tensors.items():  # the merger's own copy
            assert (info.summary.tensors[name] == tensor).all(), (c.version, name)
            assert abs(kept.summary.tensors[name] - tensor).max() <= bound, (c.version, name)
        held = info.summary
    assert [c.delta is None for c in rounds(6)] == [True, False, False, True, False, False]


def test_without_deltas_every_version_goes_by_id_and_a_layout_goes_whole_once() -> None:
    announced: dict[str, int] = {}
    keys = []
    for c in rounds(3, deltas=None):
        layout = layout_of(c.result.summary).id
        records = topic_records(c, layout, announced, quantize="float32", deltas=False)
        keys.append([k for k, _ in records])
        assert all(r["metrics"] for _, r in records)
        assert records[-1][1]["state"]["packed"]["layout"] is None
    assert keys == [["fraud-linear@whole", "fraud-linear"], ["fraud-linear"], ["fraud-linear"]]


def wire(record: dict) -> dict:
    return CODEC.decode(CODEC.encode("GlobalModel", record))
