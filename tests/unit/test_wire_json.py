"""prism.wire_json: the stdin framings round-trip any bytes; no value makes rendering raise."""

from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prism.wire_json import dumps, read_frames, render_value
from runtime.errors import UsageError
from schemas import Codec

values = st.lists(st.one_of(st.none(), st.binary(max_size=64)), max_size=8)


def kcat_format(vs: list[bytes | None], newline: bool) -> bytes:
    """What kcat prints with -f '%S %s\\n' (newline) or -f '%S %s'."""
    end = b"\n" if newline else b""
    return b"".join((b"-1 " if v is None else str(len(v)).encode() + b" " + v) + end for v in vs)


@given(values, st.booleans())
def test_kcat_framing_round_trips_any_bytes(vs: list[bytes | None], newline: bool) -> None:
    assert list(read_frames(io.BytesIO(kcat_format(vs, newline)), "kcat")) == vs


@given(st.lists(st.binary(min_size=1, max_size=64), max_size=8))
def test_line_framings_round_trip(vs: list[bytes]) -> None:
    b64 = b"".join(base64.b64encode(v) + b"\n" for v in vs)
    hexed = b"".join(v.hex().encode() + b"\r\n\n" for v in vs)
    assert list(read_frames(io.BytesIO(b64), "base64")) == vs
    assert list(read_frames(io.BytesIO(hexed), "hex")) == vs


@given(st.binary(max_size=200))
def test_any_value_renders_to_strict_json(data: bytes) -> None:
    line = dumps(render_value(Codec(), data))
    assert "\n" not in line
    parsed = json.loads(line)
    assert ("error" in parsed) != ("schema" in parsed)
    if "error" in parsed:
        assert base64.b64decode(parsed["raw_base64"]) == data


def test_a_value_cut_short_or_a_bad_length_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="value 2: 9 bytes announced, 3 read"):
        list(read_frames(io.BytesIO(b"1 a\n9 abc"), "kcat"))
    with pytest.raises(UsageError, match="expected '<length> <bytes>'"):
        list(read_frames(io.BytesIO(b"hello world"), "kcat"))
    with pytest.raises(UsageError, match="line 2 is not base64"):
        list(read_frames(io.BytesIO(b"QUJD\n!!!\n"), "base64"))


def test_raw_is_all_of_stdin() -> None:
    assert list(read_frames(io.BytesIO(b"\xc3\x01 one\nvalue"), "raw")) == [b"\xc3\x01 one\nvalue"]
