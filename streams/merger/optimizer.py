"""A server optimizer's state (FedAvgM velocity, FedAdam moments) as JSON, to rest in Redis.

A restarted merger must step from the same momentum an uninterrupted one
would, or its next global differs. Arrays travel as the base64 of their
little-endian float64 bytes, so what is read back is the same, bit for bit;
the strategy's name goes with them, and a merger started with another
strategy does not take them (momentum means nothing to another optimizer).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

import numpy as np

from models.errors import InvalidSummaryError

__all__ = ["decode_state", "encode_state"]

_DTYPE = "<f8"


def encode_state(strategy: str, state: Mapping[str, np.ndarray]) -> bytes:
    """``{"strategy": name, "arrays": {key: {"shape": [...], "f8": base64}}}`` as UTF-8 JSON."""
    arrays = {
        key: {
            "shape": list(np.shape(value)),
            "f8": base64.b64encode(np.ascontiguousarray(value, dtype=_DTYPE).tobytes()).decode(),
        }
        for key, value in sorted(state.items())
    }
    return json.dumps({"strategy": strategy, "arrays": arrays}, sort_keys=True).encode()


def decode_state(data: bytes) -> tuple[str, dict[str, np.ndarray]]:
    """The strategy's name and its state arrays; :class:`InvalidSummaryError` if malformed."""
    try:
        doc = json.loads(data)
        state = {
            str(key): np.frombuffer(base64.b64decode(a["f8"], validate=True), dtype=_DTYPE)
            .reshape(a["shape"])
            .astype(np.float64)
            for key, a in doc["arrays"].items()
        }
        return str(doc["strategy"]), state
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidSummaryError(f"server optimizer state is malformed: {e}") from e
