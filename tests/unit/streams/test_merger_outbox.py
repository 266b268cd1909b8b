"""The merger's outbox framing (#25.2): what Redis holds is produced byte for byte."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.merger.outbox import Outgoing, decode, encode

entries = st.builds(
    Outgoing,
    topic=st.text(min_size=1, max_size=80),
    key=st.binary(max_size=200),
    value=st.binary(max_size=2000),
    partition=st.integers(min_value=-1, max_value=2**31 - 1),
)


@given(entries)
def test_an_entry_comes_back_as_it_went_in(entry: Outgoing) -> None:
    assert decode(encode(entry)) == entry


def test_a_value_that_looks_like_a_frame_is_not_cut() -> None:
    inner = encode(Outgoing("global-model", b"fraud-linear@whole", b"v", 2))
    entry = Outgoing("lifecycle", b"", inner, -1)
    assert decode(encode(entry)) == entry
