"""An Avro log read a block at a time by hand equals the generic reader, event for event.

Property tests: for any log of Transactions and Labels (any values the
schemas allow, non-finite doubles and negative amounts included; null and
deflate blocks of any size; cut short anywhere) the events and bad records of
:func:`read_events` are those of fastavro's record reader (the path taken
when the hand reader is switched off).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import fastavro
import pytest
from helpers.avro_strategies import from_schema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas.eventlog as eventlog
from schemas.codec import load_schema
from schemas.eventlog import CONTAINER_SCHEMA, read_events

BOUNDED = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
RECORD = st.one_of(
    st.tuples(st.just("Transaction"), from_schema(load_schema("Transaction"))),
    st.tuples(st.just("Label"), from_schema(load_schema("Label"))),
)
TRANSACTIONS = st.tuples(st.just("Transaction"), from_schema(load_schema("Transaction")))


def container(records: list[tuple[str, dict[str, Any]]], codec: str, every: int) -> bytes:
    out = io.BytesIO()
    fastavro.writer(
        out,
        fastavro.parse_schema(CONTAINER_SCHEMA),
        [(f"prism.{name}", r) for name, r in records],
        codec=codec,
        sync_interval=every,
    )
    return out.getvalue()


def read(path: Path, generic: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list, list]:
    """Events and bad records; a reason's object address (a BytesIO's) is not compared."""
    bad: list = []
    with monkeypatch.context() as m:
        if generic:
            m.setattr(eventlog, "_BLOCK_CODECS", ())
        events = list(read_events(path, on_error=bad.append))
    return events, [b._replace(reason=re.sub(r" at 0x[0-9a-f]+", "", b.reason)) for b in bad]


def same(data: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "log.avro"
    path.write_bytes(data)
    try:
        generic = read(path, True, monkeypatch)
    except eventlog.EventLogError as e:  # a header cut short: both refuse the file
        with pytest.raises(eventlog.EventLogError, match="not an Avro container"):
            read(path, False, monkeypatch)
        assert "not an Avro container" in str(e)
        return
    fast = read(path, False, monkeypatch)
    assert fast == generic
    for (_, _, a), (_, _, b) in zip(fast[0], generic[0], strict=True):
        assert list(a) == list(b) and list(a.get("features", {})) == list(b.get("features", {}))


@BOUNDED
@given(
    records=st.lists(st.one_of(RECORD, TRANSACTIONS), max_size=30),
    codec=st.sampled_from(["null", "deflate"]),
    every=st.integers(1, 2000),
)
def test_a_log_reads_as_the_generic_reader_reads_it(
    records: list, codec: str, every: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    same(container(records, codec, every), tmp_path, monkeypatch)


@BOUNDED
@given(
    records=st.lists(TRANSACTIONS, min_size=1, max_size=20),
    every=st.integers(1, 500),
    data=st.data(),
)
def test_a_log_cut_short_or_damaged_reads_as_the_generic_reader_reads_it(
    records: list, every: int, data: st.DataObject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = bytearray(container(records, "null", every))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    else:
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    same(bytes(raw), tmp_path, monkeypatch)


def test_generated_logs_are_read_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only equal: a generated fraud log's blocks all take the hand path."""
    from prism.data.fraud import FraudConfig, generate_fraud

    path = tmp_path / "fraud.avro"
    with eventlog.open_writer(path) as w:
        for chunk in generate_fraud(FraudConfig(events=3000, sites=1, regions=1, seed=3)):
            w.write_many(r for r in chunk if r[0] == "Transaction")
    read_by_hand = []
    hand = eventlog._hand_block

    def spy(data: bytes, count: int, names: dict, shapes: dict) -> Any:
        out = hand(data, count, names, shapes)
        read_by_hand.append(out is not None)
        return out

    monkeypatch.setattr(eventlog, "_hand_block", spy)
    assert sum(1 for _ in read_events(path)) == 3000
    assert read_by_hand and all(read_by_hand)


@st.composite
def one_stream(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """Transactions of one stream: the same feature names, mostly in the same order (the
    hand reader keeps each map size's last layout), any doubles (NaN and inf too)."""
    names = draw(st.lists(st.text(max_size=4), min_size=1, max_size=5))
    base = draw(from_schema(load_schema("Transaction")))
    out = []
    for _ in range(draw(st.integers(1, 12))):
        order = draw(st.permutations(names)) if draw(st.integers(0, 4)) == 0 else names
        values = draw(st.lists(st.floats(), min_size=len(order), max_size=len(order)))
        out.append(("Transaction", base | {"features": dict(zip(order, values, strict=True))}))
    return out


@BOUNDED
@given(records=one_stream(), every=st.integers(1, 2000))
def test_a_streams_log_reads_as_the_generic_reader_reads_it(
    records: list, every: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    same(container(records, "null", every), tmp_path, monkeypatch)
