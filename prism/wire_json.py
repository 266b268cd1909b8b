"""Prism's wire values as JSON lines, and the framings that carry raw values on stdin.

Topic values are Avro single-object encoded (binary), which plain tools print
as noise; ``prism topics tail`` and ``prism topics decode`` print them
through these functions instead. Bytes fields (a dead letter's raw value, a
packed state) are base64, as in ``PRISM_ENCODING=json`` and ``prism models
show --json``; floats are JSON numbers; timestamps stay epoch milliseconds.
A value that fails to decode is an object with ``error`` and the raw bytes,
never an exception: one bad record must not stop a tail.

Framings of raw values on stdin (``prism topics decode --framing``):

- ``kcat``: what ``kcat -C -t TOPIC -e -f '%S %s\\n'`` prints: the value's
  length in decimal, a space, that many bytes, a newline (optional); length
  ``-1`` is a null value (a tombstone). Binary-safe: the length, not a
  delimiter, says where a value ends.
- ``base64`` / ``hex``: one value per line (blank lines skipped).
- ``raw``: all of stdin is one value.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import IO, Any

from runtime.errors import UsageError
from schemas import Codec, SchemaError
from schemas.codec import to_json_compatible

FRAMINGS = ("kcat", "base64", "hex", "raw")


def render_value(codec: Codec, value: bytes | None) -> dict[str, Any]:
    """``{"schema", "value"}`` for a decodable value, ``{"error", "raw_base64"}`` otherwise.

    >>> render_value(Codec(), b"\\x00junk")["error"]["reason_code"]
    'bad-marker'
    >>> render_value(Codec(), None)
    {'schema': None, 'value': None}
    """
    if value is None:  # a tombstone (compacted global-model topic)
        return {"schema": None, "value": None}
    try:
        schema, record = codec.decode_any(value)
    except SchemaError as e:
        return {
            "error": {"reason_code": e.reason_code, "reason": str(e)},
            "raw_base64": base64.b64encode(value).decode("ascii"),
        }
    return {"schema": schema, "value": to_json_compatible(record)}


def render_key(key: bytes | None) -> dict[str, Any]:
    """Keys are ids: text when they are UTF-8, else ``key_base64``."""
    if key is None:
        return {"key": None}
    try:
        return {"key": key.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": None, "key_base64": base64.b64encode(key).decode("ascii")}


def dumps(obj: dict[str, Any]) -> str:
    """One compact line of strict JSON (no NaN: the codec refuses non-finite numbers)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def read_frames(stream: IO[bytes], framing: str) -> Iterator[bytes | None]:
    """Raw values from a binary stream in ``framing``; :class:`UsageError` if it is broken."""
    if framing == "raw":
        yield stream.read()
    elif framing == "kcat":
        yield from _length_prefixed(stream)
    elif framing in ("base64", "hex"):
        for number, line in enumerate(stream, start=1):
            text = line.strip()
            if not text:
                continue
            try:
                yield (
                    base64.b64decode(text, validate=True)
                    if framing == "base64"
                    else (bytes.fromhex(text.decode("ascii")))
                )
            except (binascii.Error, ValueError) as e:
                raise UsageError(f"line {number} is not {framing}: {e}") from e
    else:
        raise UsageError(f"unknown framing {framing!r}; one of {', '.join(FRAMINGS)}")


def _length_prefixed(stream: IO[bytes]) -> Iterator[bytes | None]:
    """``<length> <bytes>[\\n]`` repeated: kcat's ``-f '%S %s\\n'`` (or ``'%S %s'``)."""
    reader = _Reader(stream)
    number = 0
    while True:
        head = b""
        while len(head) <= 20 and (c := reader.read(1)) not in (b" ", b""):
            head += c
        if not head:
            return
        number += 1
        try:
            size = int(head)
        except ValueError:
            raise UsageError(
                f"value {number}: expected '<length> <bytes>' (kcat -f '%S %s\\n'), "
                f"got {head[:20]!r}"
            ) from None
        if size < 0:
            yield None
        else:
            data = reader.read(size)
            if len(data) != size:
                raise UsageError(f"value {number}: {size} bytes announced, {len(data)} read")
            yield data
        after = reader.read(1)
        if after not in (b"\n", b""):  # frames back to back: this byte starts the next length
            reader.pushback = after


class _Reader:
    """A byte stream with one byte of push-back (stdin has no peek in general)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.pushback = stream, b""

    def read(self, n: int) -> bytes:
        head, self.pushback = self.pushback, b""
        if n <= len(head):
            return head
        return head + self.stream.read(n - len(head))
