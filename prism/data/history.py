"""Per-account velocity features computed chunk by chunk, exactly.

Velocity (how often a card was used recently) is the strongest fraud signal,
and it must not reset at chunk boundaries or the generator's output would
depend on its chunk size. This keeps the last hour of history across chunks
and each account's previous time, and computes both features vectorised.
"""

from __future__ import annotations

import numpy as np

_ACCOUNT_SHIFT = np.int64(1 << 42)  # 2**42 ms is ~139 years of relative time


class AccountHistory:
    """Seconds since each account's previous event and its count in a window."""

    def __init__(self, n_accounts: int, *, start_ms: int, window_ms: int = 3_600_000) -> None:
        if n_accounts >= 1 << 21:
            raise ValueError("at most 2**21 accounts are supported")
        self._start = start_ms
        self._window = window_ms
        self._last = np.full(n_accounts, -1, dtype=np.int64)
        self._tail_keys = np.empty(0, dtype=np.int64)
        self._tail_ts = np.empty(0, dtype=np.int64)

    def update(self, accounts: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(seconds_since_previous, count_in_window)`` per event; ``ts`` sorted.

        An account's first event gets ``inf`` seconds; counts exclude the
        event itself.
        """
        since = self._since_previous(accounts, ts)
        keys = accounts.astype(np.int64) * _ACCOUNT_SHIFT + (ts - self._start)
        all_keys = np.concatenate([self._tail_keys, keys])
        all_ts = np.concatenate([self._tail_ts, ts])
        ordered = np.sort(all_keys)
        count = np.searchsorted(ordered, keys, "left") - np.searchsorted(
            ordered, keys - self._window, "left"
        )
        recent = all_ts > ts[-1] - self._window if len(ts) else slice(None)
        self._tail_keys, self._tail_ts = all_keys[recent], all_ts[recent]
        return since, count.astype(np.float64)

    def _since_previous(self, accounts: np.ndarray, ts: np.ndarray) -> np.ndarray:
        order = np.argsort(accounts, kind="stable")
        acc, t = accounts[order], ts[order]
        first = np.ones(len(acc), dtype=bool)
        first[1:] = acc[1:] != acc[:-1]
        prev = np.empty_like(t)
        prev[1:] = t[:-1]
        prev[first] = self._last[acc[first]]
        last = np.ones(len(acc), dtype=bool)
        last[:-1] = first[1:]
        self._last[acc[last]] = t[last]
        since = np.where(prev >= 0, (t - prev) / 1000.0, np.inf)
        out = np.empty(len(acc), dtype=np.float64)
        out[order] = since
        return out
