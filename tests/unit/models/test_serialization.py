"""Summaries <-> Avro records: round trips, the real schemas, quantization, garbage."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import numpy as np
import pytest

from models.errors import InvalidSummaryError, ModelError
from models.merge import Contributor, Exclusion
from models.serialization import (
    global_model_from_record,
    global_model_record,
    state_to_summary,
    summary_from_weight_record,
    summary_to_state,
    unpacked_state,
    weight_summary_record,
)
from models.specs import SPEC_NAMES

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas" / "avro"


def through_avro(record: dict, schema_name: str) -> dict:
    schema = fastavro.parse_schema(json.loads((SCHEMAS / f"{schema_name}.avsc").read_text()))
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, schema, schema)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_weight_summary_round_trips_through_fastavro(name, make_learned, same):
    _, summary = make_learned(name, node="store-7", sequence=42)
    record = weight_summary_record(
        summary, tier="edge", region="eu", created_at_ms=1_700_000_000_000, metrics={"f1": 0.5}
    )
    back = summary_from_weight_record(through_avro(record, "WeightSummary"))
    same(back, summary)
    assert (back.node_id, back.sequence, back.base_version) == ("store-7", 42, 0)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_counts_travel_exact_and_older_spelled_out_states_still_decode(name, make_learned, same):
    _, summary = make_learned(name)
    packed = summary_to_state(summary, quantize="float16")["packed"]
    slots = {s["name"]: s["kind"] for s in packed["layout"]["slots"]}
    for tensor, array in summary.tensors.items():
        assert slots[tensor] == ("count" if array.dtype.kind in "iu" else "float")
    v1 = unpacked_state(summary)  # the v1 form: every tensor spelled out, float64
    assert v1["packed"] is None and {t["name"] for t in v1["tensors"]} == set(summary.tensors)
    same(state_to_summary(v1), summary)


def test_global_model_round_trips_with_contributors(make_learned, same):
    _, summary = make_learned("fraud-linear")
    record = global_model_record(
        summary,
        version=3,
        parent_version=2,
        strategy="fedavg",
        created_at_ms=1_700_000_000_000,
        contributors=[Contributor("a", 1, 600, 0, 0.75), Contributor("b", 4, 200, 1, 0.25)],
        excluded=[Exclusion("c", 9, "norm outlier")],
        metrics={"holdout_auc": 0.9},
    )
    info = global_model_from_record(through_avro(record, "GlobalModel"))
    same(info.summary, summary)
    assert (info.version, info.parent_version, info.summary.base_version) == (3, 2, 3)
    assert info.created_at_ms == 1_700_000_000_000
    assert info.contributors[0] == Contributor("a", 1, 600, 0, 0.75)
    assert info.excluded == (Exclusion("c", 9, "norm outlier"),)


@pytest.mark.parametrize("mode", ["float32", "float16", "int8"])
def test_quantized_summaries_keep_counts_exact_and_floats_close(mode, make_learned):
    _, summary = make_learned("fraud-linear")
    state = summary_to_state(summary, quantize=mode)
    assert state["packed"]["dtype"] == mode
    back = state_to_summary(state)
    assert back.tensors["count"].tolist() == summary.tensors["count"].tolist()
    w = summary.tensors["weights"]
    np.testing.assert_allclose(back.tensors["weights"], w, atol=np.abs(w).max() / 50)
    error = max(np.abs(back.tensors[n] - summary.tensors[n]).max() for n in ("mean", "weights"))
    assert 0 < error <= state["packed"]["max_error"]  # the summary says how approximate it is
    lossless = len(through_avro_bytes(summary_to_state(summary)))
    assert (
        len(through_avro_bytes(state)) < lossless < len(through_avro_bytes(unpacked_state(summary)))
    )


def through_avro_bytes(state: dict) -> bytes:
    schema = json.loads((SCHEMAS / "WeightSummary.avsc").read_text())
    model_state = fastavro.parse_schema(schema["fields"][6]["type"])
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, model_state, state)
    return buffer.getvalue()


def test_garbage_records_raise_invalid_summary(make_learned):
    _, summary = make_learned("iot-gauss")
    good = unpacked_state(summary)

    def broken(**tensor_changes):
        state = json.loads(json.dumps({**good, "tensors": []}))
        tensor = dict(good["tensors"][0]) | tensor_changes
        return state | {"tensors": [tensor, *good["tensors"][1:]]}

    packed = summary_to_state(summary)
    layout = packed["packed"]["layout"]

    def repacked(**changes):
        return packed | {"packed": packed["packed"] | changes}

    for state in (
        broken(dtype="complex128"),
        broken(data=b"\x00" * 3),
        broken(shape=[-1]),
        broken(data=np.array([np.nan] * 3).tobytes()),
        {k: v for k, v in good.items() if k != "features"},
        good | {"n_samples": -4},
        good | {"tensors": [good["tensors"][0]] * 2},
        repacked(values=packed["packed"]["values"][:-1]),  # a value short
        repacked(counts=packed["packed"]["counts"] + b"\x01"),  # a count too many
        repacked(counts=b"\x80"),  # a varint that never ends
        repacked(values=np.full(len(packed["packed"]["values"]) // 8, np.nan).tobytes()),
        repacked(dtype="int8"),  # no scales, wrong length
        repacked(layout_id=packed["packed"]["layout_id"] ^ 1),  # the layout is not the one named
        repacked(layout=None),  # by id, and nobody knows it
        repacked(layout=layout | {"slots": [layout["slots"][0]] * 2}),
        repacked(layout=layout | {"slots": [layout["slots"][0] | {"kind": "bool"}]}),
    ):
        with pytest.raises(InvalidSummaryError):
            state_to_summary(state)
    with pytest.raises(InvalidSummaryError):
        summary_from_weight_record({"node_id": "x"})
    with pytest.raises(InvalidSummaryError):
        global_model_from_record({"version": 1})


def test_bad_publication_arguments_raise(make_learned):
    _, summary = make_learned("iot-gauss")
    with pytest.raises(ModelError):
        weight_summary_record(summary, tier="cloud", created_at_ms=0)
    with pytest.raises(ModelError):
        weight_summary_record(summary, tier="edge", created_at_ms=0, metrics={"f1": float("nan")})
    with pytest.raises(ModelError):
        summary_to_state(summary, quantize="int4")
    with pytest.raises(ModelError):
        global_model_record(summary, version=0, strategy="fedavg", created_at_ms=0)
