"""Synthetic card transactions with ground truth, non-IID across stores.

What makes fraud detection hard, and a federated comparison meaningful, is
built in on purpose:

* every store (site) has its own customer-segment and merchant-category mix,
  drawn from ``Dirichlet(skew)`` — small ``skew`` gives very different stores;
* fraud is rare (``fraud_rate``, 0.5–2 %), partly background, partly
  **bursts** (card testing at one store for a short while) and a **fraud
  ring** (a few stolen cards used at a few online merchants across stores);
* **concept drift** at ``drift_at``: before it fraud is big-ticket, at night,
  in electronics/online/travel; after it, small amounts in daytime at
  grocery/fuel/pharmacy — a model that stops learning falls behind;
* labels arrive late as ``Label`` events (see :mod:`prism.data.labels`).

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed`` in
a fixed order, so a seed always gives the same log. Work is vectorised per
chunk of events; records are only built as dicts at the very end.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from prism.data.fraud_world import CATEGORIES, FEATURES, FraudWorld
from prism.data.history import AccountHistory
from prism.data.labels import LabelPolicy, LateLabels, Record, attach, seeded

__all__ = ["CATEGORIES", "FEATURES", "FraudConfig", "generate_fraud"]

DEFAULT_START_MS = 1_736_150_400_000  # Monday 2025-01-06T08:00:00Z


@dataclass(frozen=True, kw_only=True)
class FraudConfig:
    """Hyper-parameters of a synthetic fraud stream (``prism datagen fraud``)."""

    events: int
    sites: int = 20
    regions: int = 4
    skew: float = 0.5
    seed: int = 0
    fraud_rate: float = 0.01
    drift_at: float = 0.5
    rate_per_s: float = 5.0
    start_ms: int = DEFAULT_START_MS
    chunk_size: int = 50_000
    labels: LabelPolicy = field(default_factory=LabelPolicy)

    def __post_init__(self) -> None:
        if self.events < 1 or self.sites < 1 or self.chunk_size < 1:
            raise ValueError("events, sites and chunk size must be >= 1")
        if not 0.0 < self.fraud_rate < 0.5:
            raise ValueError(f"fraud rate must be in (0, 0.5), got {self.fraud_rate}")
        if not 0.0 <= self.drift_at <= 1.0:
            raise ValueError(f"drift point must be a fraction in [0, 1], got {self.drift_at}")


def generate_fraud(config: FraudConfig) -> Iterator[list[Record]]:
    """Yield chunks of ``(record_type, record)`` in time order, labels included."""
    rng, label_rng = seeded(config.seed)
    world = FraudWorld(config, rng)
    history = AccountHistory(world.n_accounts, start_ms=config.start_ms)
    late = LateLabels(config.labels, label_rng)
    last_ts = config.start_ms
    for start in range(0, config.events, config.chunk_size):
        n = min(config.chunk_size, config.events - start)
        ts = _timestamps(rng, n, last_ts, config.rate_per_s)
        last_ts = int(ts[-1])
        cols = _draw_chunk(world, rng, np.arange(start, start + n), ts)
        since, count = history.update(cols["account"], ts)
        events = _records(world, config, start, ts, cols, since, count)
        yield attach(config.labels, late, events, ts, cols["fraud"])
    if config.labels.mode == "late":
        yield late.drain()


def _timestamps(rng: np.random.Generator, n: int, after: int, rate: float) -> np.ndarray:
    """Poisson arrivals whose intensity follows the day (quiet nights, busy afternoons)."""
    gaps = rng.exponential(1000.0 / rate, n)
    approx = after + np.cumsum(gaps)
    hour = (approx // 3_600_000) % 24
    intensity = 0.35 + 1.3 * np.exp(-(((hour - 15.0) / 5.0) ** 2))
    return after + np.maximum(np.cumsum(gaps / intensity), 1).astype(np.int64)


def _draw_chunk(
    world: FraudWorld, rng: np.random.Generator, index: np.ndarray, ts: np.ndarray
) -> dict[str, np.ndarray]:
    """Who buys what, where, and which of it is fraud, for one chunk."""
    n = len(index)
    hour = ((ts // 3_600_000) % 24).astype(np.int64)
    site = rng.choice(world.n_sites, size=n, p=world.site_weight)
    account = world.pick_accounts(site, rng)
    seg = world.account_segment[account]
    cat = world.pick_categories(seg, site, rng)
    amount = world.base_amounts(account, cat, rng)
    after = index >= world.drift_index
    fraud = rng.random(n) < world.background_probability(seg, cat, hour, after)
    cols = {"site": site, "account": account, "cat": cat, "amount": amount, "hour": hour}
    cols |= {"fraud": fraud, "after": after, "kind": np.zeros(n, np.int8)}
    world.apply_bursts(cols, index, rng)
    world.apply_ring(cols, index, rng)
    world.disguise_fraud(cols, rng)
    world.pick_merchants(cols, rng)
    return cols


def _records(
    world: FraudWorld,
    config: FraudConfig,
    start: int,
    ts: np.ndarray,
    cols: dict[str, np.ndarray],
    since: np.ndarray,
    count: np.ndarray,
) -> list[Record]:
    """Build the Transaction dicts of one chunk from its columns."""
    features = world.features(cols, ts, since, count)
    site, account = cols["site"], cols["account"]
    sites = world.site_ids[site].tolist()
    regions = world.region_ids[site].tolist()
    accounts = world.account_ids[account].tolist()
    merchants = world.merchant_names[cols["merchant"]].tolist()
    amounts = cols["amount"].round(2).tolist()
    rows = features.tolist()
    prefix = f"tx-{config.seed}-"
    out: list[Record] = []
    append = out.append
    for i, (t, s, r, a, m, amt, row) in enumerate(
        zip(ts.tolist(), sites, regions, accounts, merchants, amounts, rows, strict=True),
        start=start,
    ):
        append(
            (
                "Transaction",
                {
                    "event_id": f"{prefix}{i:09d}",
                    "ts": t,
                    "site_id": s,
                    "region": r,
                    "account_id": a,
                    "merchant_id": m,
                    "amount": amt,
                    "currency": "EUR",
                    "features": dict(zip(FEATURES, row, strict=True)),
                    "label": None,
                },
            )
        )
    return out
