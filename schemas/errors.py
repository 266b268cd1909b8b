"""The one error a decoder raises, whatever was wrong with the bytes."""

from __future__ import annotations

REASON_CODES = (
    "truncated",
    "bad-marker",
    "unknown-fingerprint",
    "unknown-schema",
    "wrong-schema",
    "missing-field",
    "wrong-type",
    "non-finite",
    "oversized",
    "bad-json",
    "invalid-utf8",
)


class SchemaError(ValueError):
    """Bytes or a record do not fit the contract; ``reason_code`` says how.

    Consumers route the record to the dead-letter topic with ``reason_code``
    as its machine-readable kind and ``str(error)`` as the explanation.
    """

    def __init__(self, reason_code: str, message: str) -> None:
        if reason_code not in REASON_CODES:
            raise ValueError(f"unknown reason code {reason_code!r}")
        super().__init__(message)
        self.reason_code = reason_code
