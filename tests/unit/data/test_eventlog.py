"""Event logs: Avro <-> JSON Lines round trips and bad input reported by line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.eventlog import (
    BadRecord,
    EventLogError,
    count_records,
    log_format,
    open_writer,
    read_events,
)

TX = {
    "event_id": "tx-1",
    "ts": 1_735_689_600_000,
    "site_id": "store-0001",
    "region": "region-00",
    "account_id": "acct-1",
    "merchant_id": "m-1",
    "amount": 12.5,
    "currency": "EUR",
    "features": {"amount_log": 2.6, "is_night": 0.0},
    "label": None,
}
READING = {
    "event_id": "rd-1",
    "ts": 1_735_689_600_500,
    "site_id": "machine-0001",
    "region": "region-00",
    "device_id": "machine-0001-s0",
    "features": {"vibration_rms": 1.5},
    "label": True,
}
LABEL = {"event_id": "tx-1", "ts": 1_735_689_700_000, "label": False, "site_id": "store-0001"}
MIXED = [("Transaction", TX), ("SensorReading", READING), ("Label", LABEL)]


def _write(path: Path, events: list[tuple[str, dict[str, Any]]]) -> Path:
    with open_writer(path) as writer:
        writer.write_many(events)
    return path


def _read(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(e.record_type, e.record) for e in read_events(path)]


@pytest.mark.parametrize("ext", ["avro", "jsonl", "jsonl.gz"])
def test_each_format_round_trips_mixed_record_types(tmp_path: Path, ext: str) -> None:
    path = _write(tmp_path / f"log.{ext}", MIXED)
    assert _read(path) == MIXED
    assert count_records(path) == 3


def test_avro_to_jsonl_to_avro_is_identity(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.avro", MIXED)
    middle = _write(tmp_path / "b.jsonl", _read(first))
    last = _write(tmp_path / "c.avro", _read(middle))
    assert _read(last) == MIXED
    assert json.loads(middle.read_text().splitlines()[0])["type"] == "Transaction"


def test_line_numbers_of_avro_are_record_numbers(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.avro", MIXED)
    assert [e.line_no for e in read_events(path)] == [1, 2, 3]


def test_jsonl_defaults_fill_missing_optional_fields(tmp_path: Path) -> None:
    line = {k: v for k, v in TX.items() if k not in ("currency", "label")}
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"type": "Transaction", **line}) + "\n")
    assert _read(path) == [("Transaction", TX)]


BAD_LINES = [
    ('{"type": "Label", "event_id": "x", "ts": 1, "label": true}', None),
    ("{not json", "not valid JSON"),
    ('{"type": "Label", "event_id": "x", "ts": "soon", "label": true}', "wrong-type: ts should be"),
    ('{"type": "Label", "event_id": "x", "ts": 1, "label": 1}', "label should be"),
    ('{"type": "Refund", "event_id": "x"}', "field 'type'"),
    ('{"type": "Label", "ts": 1, "label": true}', "field 'event_id' is missing"),
    (
        '{"type": "Label", "event_id": "x", "ts": 1, "label": true, "lable": 1}',
        "unknown field(s) lable",
    ),
    ("[1, 2]", "JSON object"),
    (
        json.dumps({"type": "Transaction", **TX, "features": {"a": "x"}}),
        "features['a'] should be a number",
    ),
    (json.dumps({"type": "Transaction", **TX, "amount": -1.0}), "amount must be >= 0"),
    (
        '{"type": "SensorReading", "event_id": "r", "ts": 1, "site_id": "s", "region": "r",'
        ' "device_id": "d", "features": {"t": NaN}}',
        "finite",
    ),  # fmt: skip
]


def test_bad_jsonl_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(line for line, _ in BAD_LINES) + "\n")
    bad: list[BadRecord] = []
    good = list(read_events(path, on_error=bad.append))
    assert [e.line_no for e in good] == [1]
    expected = [(n, why) for n, (_, why) in enumerate(BAD_LINES, start=1) if why]
    assert [b.line_no for b in bad] == [n for n, _ in expected]
    for record, (_, why) in zip(bad, expected, strict=True):
        assert why in record.reason
        assert record.text  # the offending line, for the report


def test_without_callback_the_first_bad_line_raises_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(BAD_LINES[0][0] + "\n" + BAD_LINES[1][0] + "\n")
    with pytest.raises(EventLogError) as err:
        list(read_events(path))
    assert err.value.line_no == 2
    assert "bad.jsonl:2" in str(err.value)


def test_truncated_avro_is_reported_not_raised(tmp_path: Path) -> None:
    events = [("Transaction", {**TX, "event_id": f"tx-{i}"}) for i in range(5000)]
    path = _write(tmp_path / "log.avro", events)
    data = path.read_bytes()
    cut = tmp_path / "cut.avro"
    cut.write_bytes(data[: len(data) // 2])
    bad: list[BadRecord] = []
    good = list(read_events(cut, on_error=bad.append))
    assert 0 < len(good) < 5000
    assert len(bad) == 1 and "truncated or corrupt" in bad[0].reason
    assert bad[0].line_no == len(good) + 1


def test_a_file_that_is_not_avro_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.avro"
    path.write_bytes(b"this is not avro")
    with pytest.raises(EventLogError, match="not an Avro container"):
        list(read_events(path))


def test_writing_a_record_of_the_wrong_shape_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EventLogError, match="does not fit its schema"):
        _write(tmp_path / "log.avro", [("Transaction", {**TX, "amount": "lots"})])


def test_format_follows_the_extension() -> None:
    assert log_format("x.avro") == "avro"
    assert log_format("x.JSONL.gz") == "jsonl"
    with pytest.raises(EventLogError, match="extension"):
        log_format("x.csv")


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
records = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=20),
        # fastavro turns timestamp-millis into datetimes, which end at year 9999
        "ts": st.integers(min_value=0, max_value=253_402_300_799_999),
        "site_id": st.text(max_size=10),
        "region": st.text(max_size=5),
        "device_id": st.text(max_size=10),
        "features": st.dictionaries(st.text(max_size=8), finite, max_size=5),
        "label": st.none() | st.booleans(),
    }
)


@settings(max_examples=30, deadline=None)
@given(st.lists(records, max_size=20))
def test_any_valid_reading_survives_both_formats(tmp_path_factory: Any, rows: list) -> None:
    events = [("SensorReading", r) for r in rows]
    tmp = tmp_path_factory.mktemp("prop")
    avro = _write(tmp / "log.avro", events)
    jsonl = _write(tmp / "log.jsonl", _read(avro))
    assert _read(jsonl) == events
