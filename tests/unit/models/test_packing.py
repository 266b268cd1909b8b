"""Packed summaries: varints, error bounds, layouts by id, and what they save."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.errors import InvalidSummaryError
from models.packing import LayoutBook, layout_of, pack, unpack, varint_decode, varint_encode
from models.serialization import summary_to_state, unpacked_state
from models.specs import get_spec
from models.summary import Summary

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_subnormal=False)


@given(st.lists(INT64, max_size=200))
def test_varints_round_trip_any_int64(values):
    data = varint_encode(np.array(values, dtype=np.int64))
    assert varint_decode(data, len(values)).tolist() == values
    small = [v for v in values if -64 <= v < 64]
    assert len(varint_encode(np.array(small, dtype=np.int64))) == len(small)  # a byte each


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=20), st.integers(0, 3))
def test_varints_refuse_the_wrong_count_or_a_cut(values, cut):
    data = varint_encode(np.array(values, dtype=np.int64))
    with pytest.raises(InvalidSummaryError):
        varint_decode(data, len(values) + 1)
    if cut:
        with pytest.raises(InvalidSummaryError):
            varint_decode(data[:-1] + bytes([data[-1] | 0x80]), len(values))


def summary_of(weights: np.ndarray, counts: np.ndarray) -> Summary:
    features = tuple(f"f{i}" for i in range(len(weights)))
    tensors = {"weights": weights, "mean": weights * 3.0, "count": counts}
    return Summary("m", "linear", features, int(counts.max(initial=0)), tensors, {"lr": "0.1"})


@settings(max_examples=80, deadline=None)
@given(
    hnp.arrays(np.float64, st.integers(0, 40), elements=FLOATS),
    st.sampled_from(["float64", "float32", "float16", "int8"]),
    st.integers(0, 10**9),
)
def test_pack_unpack_keeps_counts_exact_and_floats_within_their_bound(weights, dtype, n):
    counts = np.full(len(weights), n, dtype=np.int64)
    s = summary_of(weights, counts)
    packed = pack(s, dtype)
    back = unpack(packed, "m", "linear", s.n_samples)
    assert back.features == s.features and dict(back.params) == dict(s.params)
    assert back.tensors["count"].tolist() == counts.tolist()
    error = max(np.abs(back.tensors[k] - s.tensors[k]).max(initial=0) for k in ("weights", "mean"))
    assert error == packed["max_error"]  # measured, not estimated
    top = max(np.abs(s.tensors["mean"]).max(initial=0), 1e-300)
    bound = {
        "float64": 0.0,
        "float32": top * 2.0**-24 + 2.0**-150,  # relative, and half float32's least step
        "float16": top * 2.0**-11 + 2.0**-25,  # relative in the normal range, absolute below
        "int8": 2 * top / 254 / 2 * (1 + 1e-9),  # half a step of the widest tensor's range
    }[dtype]
    assert error <= bound


def test_a_layout_sent_once_then_by_id_needs_a_receiver_that_holds_it():
    s = summary_of(np.array([0.5, -1.0]), np.array([3, 3]))
    book = LayoutBook()
    full, by_id = pack(s, "float32"), pack(s, "float32", with_layout=False)
    assert by_id["layout"] is None and by_id["layout_id"] == full["layout_id"]
    with pytest.raises(InvalidSummaryError, match="has not seen"):
        unpack(by_id, "m", "linear", 3, book=book)
    unpack(full, "m", "linear", 3, book=book)  # the receiver learns it
    assert full["layout_id"] in book and len(book) == 1
    assert unpack(by_id, "m", "linear", 3, book=book).tensors["count"].tolist() == [3, 3]
    other = layout_of(summary_of(np.array([1.0]), np.array([1])))
    tiny = LayoutBook(capacity=1)
    tiny.learn(layout_of(s))
    tiny.learn(other)
    assert full["layout_id"] not in tiny and other.id in tiny  # bounded, oldest forgotten


def test_a_float32_block_that_cannot_hold_a_value_travels_lossless():
    s = summary_of(np.array([1e300, 1.0]), np.array([1, 1]))
    packed = pack(s, "float32")
    assert packed["dtype"] == "float64" and packed["max_error"] == 0.0


@pytest.mark.parametrize("name", ["fraud-linear", "iot-hst"])
def test_packed_states_are_several_times_smaller_than_spelled_out_ones(name, make_learned):
    import io

    import fastavro  # noqa: E401 - local: only this test needs the raw writer

    from schemas.registry import load_schema

    schema = fastavro.parse_schema(load_schema("WeightSummary")["fields"][6]["type"])

    def size(state):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, state)
        return len(buffer.getvalue())

    _, summary = make_learned(name)
    spelled, packed = size(unpacked_state(summary)), size(summary_to_state(summary, "float32"))
    by_id = size(summary_to_state(summary, "float32", with_layout=False))
    assert by_id < packed < spelled / (4 if name == "iot-hst" else 1.3)
    get_spec(name).algebra.check(unpack(summary_to_state(summary, "float32")["packed"], name,
                                        summary.kind, summary.n_samples))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    st.lists(hnp.arrays(np.float64, 6, elements=FLOATS), min_size=2, max_size=8),
    st.sampled_from(["float64", "float32", "float16", "int8"]),
)
def test_a_delta_chain_adds_up_to_what_the_sender_keeps_and_counts_stay_exact(models, dtype):
    """The merger keeps base + delta (error feedback); a node that applies the same deltas
    to the same whole version holds exactly that, counts exactly, floats near the truth."""
    from models.packing import apply_delta, pack_delta

    truth = [summary_of(w, np.full(6, 10 * (i + 1), dtype=np.int64)) for i, w in enumerate(models)]
    sender = node = truth[0]
    for new in truth[1:]:
        before = sender
        packed = pack_delta(new, sender, dtype)
        assert packed["layout"] is None  # deltas name their layout by id
        sender = apply_delta(sender, packed, new.n_samples)  # what the merger keeps
        node = apply_delta(node, packed, new.n_samples)  # what a node rebuilds
        for name in new.tensors:
            np.testing.assert_array_equal(node.tensors[name], sender.tensors[name])
        assert node.tensors["count"].tolist() == new.tensors["count"].tolist()
        # the error is this delta's alone (and float64's rounding of base + delta): it never
        # adds up along the chain
        error = max(np.abs(sender.tensors[k] - new.tensors[k]).max() for k in ("weights", "mean"))
        top = max(np.abs(s.tensors[k]).max() for k in ("weights", "mean") for s in (new, before))
        assert error <= packed["max_error"] * (1 + 1e-9) + 4 * np.finfo(float).eps * top


def test_a_delta_refuses_another_layout_and_a_node_without_its_base():
    from models.errors import DeltaBaseError, ModelError
    from models.packing import apply_delta, pack_delta
    from models.serialization import global_model_from_record, global_model_record

    a = summary_of(np.array([0.5, -1.0]), np.array([3, 3]))
    b = summary_of(np.array([0.7, -1.1]), np.array([5, 5]))
    wider = summary_of(np.array([0.5, -1.0, 2.0]), np.array([3, 3, 3]))
    with pytest.raises(ModelError, match="same layout"):
        pack_delta(wider, a)
    with pytest.raises(InvalidSummaryError, match="does not fit"):
        apply_delta(wider, pack_delta(b, a), 5)
    record = global_model_record(b, version=8, strategy="fedavg", created_at_ms=0,
                                 delta=(7, pack_delta(b, a)))  # fmt: skip
    with pytest.raises(DeltaBaseError, match="holds none"):
        global_model_from_record(record)
    with pytest.raises(DeltaBaseError, match="holds 6"):
        global_model_from_record(record, held=a.with_provenance(node_id="g", sequence=0,
                                                                base_version=6))  # fmt: skip
    held = a.with_provenance(node_id="g", sequence=0, base_version=7)
    info = global_model_from_record(record, held=held)
    assert info.version == 8 and info.summary.tensors["count"].tolist() == [5, 5]


SPARSE = st.lists(st.integers(0, 2**20), min_size=1, max_size=40)


@settings(max_examples=80, deadline=None)
@given(SPARSE, st.integers(40, 1500), st.integers(0, 2**32))
def test_sparse_counts_travel_deflated_only_when_smaller_and_always_exact(nonzero, n, seed):
    rng = np.random.default_rng(seed)
    counts = np.zeros(n, dtype=np.int64)
    counts[rng.choice(n, size=min(n, len(nonzero)), replace=False)] = nonzero[:n]
    s = summary_of(np.zeros(n), counts)
    packed = pack(s, "float16")
    varints = len(varint_encode(counts))
    assert len(packed["counts"]) <= varints
    assert packed["counts_codec"] == ("deflate" if len(packed["counts"]) < varints else "varint")
    assert unpack(packed, "m", "linear", s.n_samples).tensors["count"].tolist() == counts.tolist()


def test_mostly_zero_counts_are_deflated_several_times_smaller():
    counts = np.zeros(630, dtype=np.int64)
    counts[::7] = np.arange(90) % 50 + 1
    packed = pack(summary_of(np.zeros(630), counts), "float32")
    assert packed["counts_codec"] == "deflate" and len(packed["counts"]) * 3 < 630


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 2**32), min_size=2, max_size=6))
def test_sparse_hst_deltas_add_up_to_the_same_node_counts(seeds):
    """Between HST globals most node masses do not change: the delta's counts are mostly
    zero and deflated, and a node that applies the chain holds the very same counts."""
    from models.packing import apply_delta, pack_delta

    spec = get_spec("iot-hst")
    model, rng = spec.new_model(), np.random.default_rng(seeds[0])
    versions = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for _ in range(30):
            spec.learn_one(model, {f"s{i}": float(rng.normal()) for i in range(4)}, None)
        versions.append(spec.summarize(model))
    node = versions[0]
    for before, new in zip(versions, versions[1:], strict=False):
        packed = pack_delta(new, before)
        assert packed["counts_codec"] == "deflate"  # 30 readings touch few of 630 nodes
        node = apply_delta(node, packed, new.n_samples)
        for name, tensor in new.tensors.items():
            if tensor.dtype.kind in "iu":
                assert node.tensors[name].tolist() == tensor.tolist(), name


@pytest.mark.parametrize(
    "mangle, says",
    [
        (lambda b: b[:-3], "cut short|inflate"),
        (lambda b: b + b"\x00", "padded"),
        (lambda b: b"\xff" + b[1:], "inflate|cut short|varint"),
    ],
)
def test_a_mangled_deflated_block_is_refused_with_its_reason(mangle, says):
    counts = np.zeros(600, dtype=np.int64)
    counts[::9] = 5
    packed = pack(summary_of(np.zeros(600), counts), "float32")
    assert packed["counts_codec"] == "deflate"
    with pytest.raises(InvalidSummaryError, match=says):
        unpack(dict(packed, counts=mangle(packed["counts"])), "m", "linear", 5)


def test_a_deflate_bomb_is_refused_before_it_is_inflated_in_full():
    import zlib

    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = z.compress(b"\x00" * 10_000_000) + z.flush()
    packed = pack(summary_of(np.zeros(600), np.zeros(600, dtype=np.int64)), "float32")
    with pytest.raises(InvalidSummaryError, match="too big|padded|cut short"):
        unpack(dict(packed, counts=bomb, counts_codec="deflate"), "m", "linear", 5)


@pytest.mark.parametrize("scale", [1e308, float("inf"), float("nan")])
def test_an_int8_scale_that_decodes_past_float64_is_refused(scale):
    """Refused with a reason, and quietly: no numpy overflow warning on hostile input."""
    import warnings

    warnings.simplefilter("error", RuntimeWarning)
    packed = pack(summary_of(np.array([0.5, -1.0, 2.0]), np.array([3, 3, 3])), "int8")
    scales = list(packed["scales"])
    scales[0] = scale
    with pytest.raises(InvalidSummaryError, match="NaN or inf|must be finite"):
        unpack(dict(packed, scales=scales), "m", "linear", 3)
