"""The hand-written Label decoder and Score encoder equal the codec, byte for byte.

Property tests: for any input the outcome of the fast path (record, bytes or
SchemaError with its reason code and message) is the outcome of the Codec.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.avro_strategies import from_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Codec, SchemaError
from schemas.codec import MARKER, fingerprint, load_schema
from schemas.hotpath import EdgeScoreEncoder, LabelDecoder, ScoreEncoder, _read_label

BOUNDED = settings(max_examples=300, deadline=None)
LONGS = st.integers(-(2**63), 2**63 - 1)
DOUBLES = st.floats(allow_nan=True, allow_infinity=True)
SOURCES = ["central", "global", "local", "blend"]


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args, **kwargs)
    except SchemaError as e:
        return "error", (e.reason_code, str(e))


def test_both_fast_paths_are_on_for_the_current_schemas() -> None:
    """A schema change switches the fast path off; this says so (update the module)."""
    assert LabelDecoder(Codec()).fast
    assert ScoreEncoder(Codec()).fast


# -- Labels in -----------------------------------------------------------------------


@BOUNDED
@given(from_schema(load_schema("Label")))
def test_a_valid_label_is_read_by_hand_as_the_codec_reads_it(label: dict[str, Any]) -> None:
    data = Codec().encode("Label", label)
    assert LabelDecoder(Codec()).decode(data) == Codec().decode(data, expected="Label") == label
    if abs(label["ts"]) < 2**54:  # longer varints go to the codec, by design
        assert _read_label(data) == label


@BOUNDED
@given(st.data())
def test_damaged_labels_fail_or_decode_exactly_as_the_codec(data: st.DataObject) -> None:
    codec = Codec()
    message = bytearray(codec.encode("Label", data.draw(from_schema(load_schema("Label")))))
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(message) - 1))
        message[i] ^= 1 << data.draw(st.integers(0, 7))
    message = message[: data.draw(st.integers(0, len(message)))] + data.draw(st.binary(max_size=3))
    raw = bytes(message)
    assert outcome(LabelDecoder(codec).decode, raw) == outcome(codec.decode, raw, expected="Label")


@BOUNDED
@given(st.binary(max_size=60))
def test_any_body_behind_the_label_header_decodes_as_the_codec(body: bytes) -> None:
    codec = Codec()
    raw = MARKER + fingerprint("Label") + body
    assert outcome(LabelDecoder(codec).decode, raw) == outcome(codec.decode, raw, expected="Label")


@pytest.mark.parametrize(
    "raw",
    [
        Codec("json").encode("Label", {"event_id": "e", "ts": 1, "label": True}),
        Codec().encode(
            "Score",
            {
                **dict.fromkeys(("ts", "scored_at", "model_version"), 1),
                "event_id": "e",
                "node_id": "n",
                "model_name": "m",
                "source": "central",
                "score": 0.5,
            },
        ),
        MARKER + fingerprint("Label") + b"\x02e" + b"\xff" * 12 + b"\x01\x00",  # long varint
        MARKER + fingerprint("Label") + b"\x02e" + b"\xff" * 9 + b"\x01\x01\x00",  # 10 bytes
        MARKER + fingerprint("Label") + b"\x02e" + b"\xff" * 10 + b"\x01\x01\x00",  # 11
        MARKER + fingerprint("Label") + b"\x04\xff\xfe\x02\x01\x00",  # bad UTF-8
        MARKER + fingerprint("Label") + b"\x02e\x02\x02\x00",  # boolean byte 2: True
        MARKER + fingerprint("Label") + b"\x02e\x02\x00\x04\x02a",  # no union branch 2
        MARKER + fingerprint("Label") + b"\x01\x00\x00",  # negative length
        MARKER + fingerprint("Label") + b"\x02e\x02\x00\x02\x08ab",  # site cut short
        MARKER + fingerprint("Label") + b"\x02e\x02\x00\x00\x00",  # a byte after it
    ],
    ids=[
        "json",
        "other-schema",
        "varint-13-bytes",
        "varint-10-bytes",
        "varint-11-bytes",
        "invalid-utf8",
        "boolean-byte-2",
        "union-branch-2",
        "negative-length",
        "string-cut-short",
        "trailing-byte",
    ],
)
def test_what_the_fast_path_does_not_read_goes_to_the_codec(raw: bytes) -> None:
    codec = Codec()
    assert outcome(LabelDecoder(codec).decode, raw) == outcome(codec.decode, raw, expected="Label")


def test_an_oversized_label_is_refused_as_the_codec_refuses_it() -> None:
    small = Codec(max_bytes=20)
    raw = Codec().encode("Label", {"event_id": "e" * 30, "ts": 1, "label": False})
    assert outcome(LabelDecoder(small).decode, raw)[1][0] == "oversized"


# -- Scores out ----------------------------------------------------------------------

ROWS = st.lists(
    st.tuples(
        st.text(max_size=12) | st.just("a\ud800b"),  # a lone surrogate cannot be UTF-8
        LONGS | st.just(2**63),
        DOUBLES | st.integers(-5, 5),
        st.sampled_from([None, True, False]),
        DOUBLES,
    ),
    min_size=1,
    max_size=5,
)
SHARED = st.fixed_dictionaries(
    {
        "scored_at": LONGS,
        "node_id": st.text(max_size=10),
        "model_name": st.text(max_size=10),
        "model_version": LONGS | st.just(-(2**63) - 1),
        "source": st.sampled_from([*SOURCES, "nowhere"]),
    }
)


def one_by_one(codec: Codec, rows: list, shared: dict[str, Any]) -> list[bytes]:
    """The reference: a full ``Codec.encode`` per Score."""
    return [
        codec.encode(
            "Score",
            {
                "event_id": eid,
                "ts": ts,
                **shared,
                "score": score,
                "label": label,
                "latency_ms": latency,
            },
        )
        for eid, ts, score, label, latency in rows
    ]


@BOUNDED
@given(ROWS, SHARED, st.sampled_from(["avro", "json"]))
def test_scores_encode_to_the_codecs_bytes_or_its_error(
    rows: list, shared: dict[str, Any], mode: str
) -> None:
    codec = Codec(mode)
    expected = outcome(one_by_one, codec, rows, shared)
    assert outcome(ScoreEncoder(codec).encode, rows, **shared) == expected


@BOUNDED
@given(
    st.lists(
        st.tuples(
            st.text(max_size=12),
            st.integers(0, 2**45),
            st.floats(0, 1),
            st.sampled_from([None, True, False]),
            st.floats(0, 1e6),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_ordinary_scores_take_the_fast_path(rows: list) -> None:
    """What the worker sends is written by hand (the codec is never asked)."""

    class NoCodec(Codec):
        def encode(self, name: str, record: dict[str, Any]) -> bytes:
            raise AssertionError("the fast path fell back to the codec")

    shared = {"scored_at": 1, "node_id": "w", "model_name": "m", "model_version": 0}
    fast = ScoreEncoder(NoCodec()).encode(rows, **shared, source="central")
    assert fast == one_by_one(Codec(), rows, {**shared, "source": "central"})


@pytest.mark.parametrize(
    "row",
    [
        ("e", 1, float("nan"), None, 0.0),
        ("e", 1, float("inf"), None, 0.0),
        ("e", 1, 0.5, None, float("-inf")),
        ("e", 1, 0.5, None, float("nan")),
        ("e", 2**63, 0.5, None, 0.0),
        ("e", -(2**63) - 1, 0.5, None, 0.0),
        ("a\ud800", 1, 0.5, None, 0.0),
        ("e", 1, 0.5, 1, 0.0),
        ("e", 1, 3, True, 0.0),
        ("e", True, 0.5, False, 0.0),
    ],
    ids=[
        "nan-score",
        "inf-score",
        "inf-latency",
        "nan-latency",
        "ts-too-big",
        "ts-too-small",
        "surrogate",
        "int-label",
        "int-score",
        "bool-ts",
    ],
)
def test_odd_scores_get_the_codecs_answer(row: tuple) -> None:
    shared = {"scored_at": 1, "node_id": "w", "model_name": "m", "model_version": 0}
    expected = outcome(one_by_one, Codec(), [row], {**shared, "source": "central"})
    assert outcome(ScoreEncoder(Codec()).encode, [row], **shared, source="central") == expected


@pytest.mark.parametrize(
    "shared",
    [
        {"scored_at": 2**63},
        {"model_version": -(2**63) - 1},
        {"source": "nowhere"},
        {"node_id": "\udc00"},
        {"model_name": 7},
    ],
    ids=["scored-at-too-big", "version-too-small", "unknown-source", "surrogate", "not-a-string"],
)
def test_odd_shared_fields_get_the_codecs_answer(shared: dict[str, Any]) -> None:
    shared = {
        "scored_at": 1,
        "node_id": "w",
        "model_name": "m",
        "model_version": 0,
        "source": "central",
    } | shared
    rows = [("e", 1, 0.5, None, 0.0)]
    assert outcome(ScoreEncoder(Codec()).encode, rows, **shared) == outcome(
        one_by_one, Codec(), rows, shared
    )


def test_an_oversized_score_is_refused_as_the_codec_refuses_it() -> None:
    small = Codec(max_bytes=40)
    rows = [("e" * 40, 1, 0.5, None, 0.0)]
    shared = {"scored_at": 1, "node_id": "w", "model_name": "m", "model_version": 0}
    found = outcome(ScoreEncoder(small).encode, rows, **shared, source="central")
    assert found[0] == "error" and found[1][0] == "oversized"


# -- One whole Score (an edge agent's, with its experts) --------------------------------

EXPERT = st.fixed_dictionaries(
    {
        "name": st.text(max_size=8) | st.just("\ud800"),
        "weight": DOUBLES | st.integers(0, 1),
        "version": LONGS | st.just(2**63),
    }
)
WHOLE = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=12) | st.just("a\ud800b"),
        "ts": LONGS | st.just(True),
        "scored_at": LONGS,
        "node_id": st.text(max_size=10),
        "model_name": st.text(max_size=10),
        "model_version": LONGS,
        "source": st.sampled_from([*SOURCES, "nowhere"]),
        "score": DOUBLES | st.integers(-5, 5),
    },
    optional={
        "latency_ms": DOUBLES,
        "label": st.sampled_from([None, True, False, 1]),
        "experts": st.none() | st.lists(EXPERT, max_size=3) | st.just([{"name": "x"}]),
        "provenance": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)
        | st.just({"k": 1})
        | st.just({"\udc00": "v"}),
        "extra": st.just(1),
    },
)


@BOUNDED
@given(st.one_of(from_schema(load_schema("Score")), WHOLE))
def test_one_whole_score_encodes_to_the_codecs_bytes_or_its_error(record: dict) -> None:
    codec = Codec()
    expected = outcome(codec.encode, "Score", record)
    assert outcome(ScoreEncoder(codec).encode_one, record) == expected


@BOUNDED
@given(
    st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["personal", "global"]), "weight": st.floats(0, 1)}
        ),
        max_size=3,
    ),
    st.sampled_from([None, True, False]),
)
def test_an_edge_score_takes_the_fast_path(experts: list, label: bool | None) -> None:
    """What an edge agent sends -- mixed or not -- is written by hand (the codec is never asked)."""

    class NoCodec(Codec):
        def encode(self, name: str, record: dict[str, Any]) -> bytes:
            raise AssertionError("the fast path fell back to the codec")

    record = {
        "event_id": "e-1",
        "ts": 1_700_000_000_000,
        "scored_at": 1_700_000_000_004,
        "node_id": "store-7",
        "model_name": "fraud-linear",
        "model_version": 3,
        "source": "blend" if experts else "local",
        "score": 0.25,
        "latency_ms": 0.01,
        "label": label,
        "experts": [{**e, "version": 3} for e in experts] or None,
        "provenance": {"restored_from": "1", "reason": "bad round"} if label else {},
    }
    assert ScoreEncoder(NoCodec()).encode_one(record) == Codec().encode("Score", record)


EDGE_FIELDS = st.tuples(
    st.text(max_size=12) | st.just("a\ud800b"),  # event_id
    LONGS | st.just(True),  # ts
    LONGS | st.just(2**63),  # scored_at
    st.text(max_size=10) | st.just("\udc00"),  # node_id
    st.sampled_from(["fraud-linear", "iot-gauss"]) | st.text(max_size=4),  # model_name
    LONGS,  # version
    st.sampled_from([*SOURCES, "nowhere"]),  # source
    DOUBLES | st.integers(-5, 5),  # score
    DOUBLES,  # latency_ms
    st.sampled_from([None, True, False, 1]),  # label
    st.lists(
        st.tuples(
            st.sampled_from(["personal", "global", "shifted"]) | st.text(max_size=6), DOUBLES
        ),
        max_size=3,
    ).map(tuple),  # weights
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)
    | st.just({"k": 1})
    | st.just({"\udc00": "v"}),  # provenance
)


@BOUNDED
@given(st.lists(EDGE_FIELDS, min_size=1, max_size=4))
def test_an_edge_score_from_its_fields_is_the_codecs_bytes_or_its_error(scores: list) -> None:
    """One encoder for several Scores in turn: its caches never mix one Score's parts
    into another's."""
    codec = Codec()
    encoder = EdgeScoreEncoder(codec)
    for fields in scores:
        expected = outcome(codec.encode, "Score", EdgeScoreEncoder.record(*fields))
        assert outcome(encoder.encode, *fields) == expected


@BOUNDED
@given(
    st.lists(
        st.tuples(st.sampled_from(["personal", "global", "shifted"]), st.floats(0, 1)),
        max_size=3,
    ).map(tuple),
    st.sampled_from([None, True, False]),
    st.integers(0, 2**40),
)
def test_an_edge_agents_score_is_written_by_hand(weights: tuple, label: Any, version: int) -> None:
    """What an edge agent sends is never handed to the generic encoders."""

    class NoCodec(Codec):
        def encode(self, name: str, record: dict[str, Any]) -> bytes:
            raise AssertionError("the fast path fell back to the codec")

    encoder = EdgeScoreEncoder(NoCodec())
    encoder.whole.encode_one = None  # type: ignore[method-assign] # a call would fail
    fields = ("e-1", 1_700_000_000_000, 1_700_000_000_004, "store-7", "fraud-linear",
              version, "blend" if weights else "local", 0.25, 0.01, label, weights,
              {"pinned": "3"} if label else {})  # fmt: skip
    expected = Codec().encode("Score", EdgeScoreEncoder.record(*fields))
    assert encoder.encode(*fields) == expected
