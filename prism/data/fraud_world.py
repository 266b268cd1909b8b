"""The static world behind the fraud generator: stores, cards, merchants, fraud plans.

Kept apart from the per-chunk loop in :mod:`prism.data.fraud` so the numbers
that shape the data (segment habits, category risks before and after the
drift, burst and ring plans) sit in one readable place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from prism.data.splitting import (
    assign_regions,
    categorical,
    dirichlet_mix,
    region_names,
    site_names,
)

if TYPE_CHECKING:
    from prism.data.fraud import FraudConfig

CATEGORIES = (
    "grocery",
    "fuel",
    "restaurant",
    "electronics",
    "online",
    "travel",
    "pharmacy",
    "fashion",
)
FEATURES = (
    "amount_log",
    "amount_ratio",
    "hour_sin",
    "hour_cos",
    "is_night",
    "cat_risk",
    "card_present",
    "foreign",
    "away_from_home",
    "secs_since_last_log",
    "tx_count_1h",
)
_ONLINE = np.array([c in ("online", "travel") for c in CATEGORIES])
# Customer segments: student, family, commuter, business, senior, traveller.
_SEG_CAT = np.array(
    [
        [0.25, 0.05, 0.25, 0.10, 0.25, 0.02, 0.03, 0.05],
        [0.40, 0.15, 0.10, 0.05, 0.10, 0.03, 0.10, 0.07],
        [0.20, 0.35, 0.15, 0.03, 0.12, 0.02, 0.05, 0.08],
        [0.10, 0.10, 0.25, 0.08, 0.12, 0.25, 0.02, 0.08],
        [0.35, 0.10, 0.10, 0.02, 0.05, 0.05, 0.30, 0.03],
        [0.10, 0.05, 0.20, 0.05, 0.15, 0.35, 0.03, 0.07],
    ]
)
_SEG_AMOUNT = np.log([18.0, 45.0, 30.0, 95.0, 35.0, 70.0])
_SEG_SUSCEPTIBLE = np.array([1.3, 0.8, 0.9, 1.1, 1.4, 1.5])
_CAT_AMOUNT = np.array([1.0, 1.2, 0.9, 4.0, 1.5, 5.0, 0.6, 1.8])
_RISK_BEFORE = np.array([0.3, 0.4, 0.5, 2.5, 2.2, 1.8, 0.3, 1.0])
_RISK_AFTER = np.array([1.8, 2.2, 0.6, 0.4, 1.2, 0.5, 1.6, 0.6])
_HOURS = np.arange(24)
_NIGHT_BEFORE = np.where(_HOURS < 6, 3.0, 1.0)
_DAY_AFTER = np.where((_HOURS >= 9) & (_HOURS < 18), 1.8, 0.6)
_SHARE = {"background": 0.75, "bursts": 0.15, "ring": 0.10}
_LOCAL_PER_CAT, _WEB_PER_CAT, _RING_MERCHANTS = 5, 40, 3
_BURST_HIT = 0.6  # share of a store's events that are fraud during its burst


class FraudWorld:
    """Stores, accounts and merchants with their habits, and where fraud will strike."""

    def __init__(self, config: FraudConfig, rng: np.random.Generator) -> None:
        k, n = config.sites, config.events
        self.config = config
        self.n_sites = k
        self.site_ids = np.array(site_names(k, "store"), dtype=object)
        self.region_ids = np.array(region_names(config.regions), dtype=object)[
            assign_regions(k, config.regions)
        ]
        weight = rng.lognormal(0.0, 0.5, k)
        self.site_weight = weight / weight.sum()
        self.site_segments = dirichlet_mix(k, len(_SEG_CAT), alpha=config.skew, rng=rng)
        self.site_categories = dirichlet_mix(k, len(CATEGORIES), alpha=config.skew, rng=rng)
        self._make_accounts(rng, int(np.clip(n // 20, max(200, 5 * k), 2_000_000)))
        self.drift_index = int(round(config.drift_at * n))
        self._normaliser = self._mean_multipliers(rng)
        self._plan_bursts(rng)
        self._plan_ring(rng)
        self.merchant_names = self._make_merchants()

    def _make_accounts(self, rng: np.random.Generator, n_accounts: int) -> None:
        home = rng.choice(self.n_sites, size=n_accounts, p=self.site_weight)
        home[: self.n_sites] = np.arange(self.n_sites)  # every store has a customer
        self.n_accounts = n_accounts
        self.account_home = home
        self.account_segment = categorical(self.site_segments[home], rng)
        self.account_mu = _SEG_AMOUNT[self.account_segment] + rng.normal(0, 0.35, n_accounts)
        self.account_ids = np.array([f"acct-{i:07d}" for i in range(n_accounts)], dtype=object)
        self._by_site = np.argsort(home, kind="stable")
        self._site_count = np.bincount(home, minlength=self.n_sites)
        self._site_start = np.concatenate([[0], np.cumsum(self._site_count)[:-1]])

    def _mean_multipliers(self, rng: np.random.Generator) -> tuple[float, float]:
        """E[risk multiplier] before and after the drift, so the fraud rate hits its target."""
        site = rng.choice(self.n_sites, size=20_000, p=self.site_weight)
        seg = self.account_segment[self.pick_accounts(site, rng)]
        cat = self.pick_categories(seg, site, rng)
        hour = rng.integers(0, 24, len(site))
        before = _SEG_SUSCEPTIBLE[seg] * _RISK_BEFORE[cat] * _NIGHT_BEFORE[hour]
        after = _SEG_SUSCEPTIBLE[seg] * _RISK_AFTER[cat] * _DAY_AFTER[hour]
        return float(before.mean()), float(after.mean())

    def _plan_bursts(self, rng: np.random.Generator) -> None:
        """Card-testing bursts: one store, a short window, 60 % of its events fraudulent."""
        n, rate = self.config.events, self.config.fraud_rate
        count = max(2, round(n / 50_000))
        sites = rng.choice(self.n_sites, size=count, p=self.site_weight)
        self.bursts = []
        for site in sites.tolist():
            length = _SHARE["bursts"] * rate * n / (count * self.site_weight[site] * _BURST_HIT)
            length = int(min(max(length, 50), 0.05 * n))
            start = int(rng.integers(0, max(1, n - length)))
            self.bursts.append((site, start, start + length))

    def _plan_ring(self, rng: np.random.Generator) -> None:
        """A fraud ring: a few stolen cards at ring merchants across a few stores."""
        n = self.config.events
        self.ring_accounts = rng.choice(
            self.n_accounts, size=min(30, self.n_accounts), replace=False
        )
        self.ring_sites = rng.choice(self.n_sites, size=min(4, self.n_sites), replace=False)
        width = max(1, int(0.03 * n))
        starts = np.sort(rng.integers(0, max(1, n - width), size=2))
        self.ring_windows = [(int(s), int(s) + width) for s in starts]
        self.ring_probability = min(0.5, _SHARE["ring"] * self.config.fraud_rate * n / (2 * width))

    def _make_merchants(self) -> np.ndarray:
        local = [
            f"m-{s:04d}-{c}-{j}"
            for s in range(self.n_sites)
            for c in CATEGORIES
            for j in range(_LOCAL_PER_CAT)
        ]
        web = [f"m-web-{c}-{j:02d}" for c in CATEGORIES for j in range(_WEB_PER_CAT)]
        ring = [f"m-ring-{j}" for j in range(_RING_MERCHANTS)]
        return np.array(local + web + ring, dtype=object)

    def pick_accounts(self, site: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Mostly the store's own customers; 8 % are cards from elsewhere."""
        offset = (rng.random(len(site)) * self._site_count[site]).astype(np.int64)
        local = self._by_site[self._site_start[site] + offset]
        visitor = rng.integers(0, self.n_accounts, len(site))
        return np.where(rng.random(len(site)) < 0.92, local, visitor)

    def pick_categories(
        self, seg: np.ndarray, site: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        probs = _SEG_CAT[seg] * self.site_categories[site]
        return categorical(probs / probs.sum(axis=1, keepdims=True), rng)

    def base_amounts(
        self, account: np.ndarray, cat: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return (
            np.exp(self.account_mu[account] + 0.6 * rng.standard_normal(len(account)))
            * (_CAT_AMOUNT[cat])
        )

    def background_probability(
        self, seg: np.ndarray, cat: np.ndarray, hour: np.ndarray, after: np.ndarray
    ) -> np.ndarray:
        before_m = _SEG_SUSCEPTIBLE[seg] * _RISK_BEFORE[cat] * _NIGHT_BEFORE[hour]
        after_m = _SEG_SUSCEPTIBLE[seg] * _RISK_AFTER[cat] * _DAY_AFTER[hour]
        m = np.where(after, after_m / self._normaliser[1], before_m / self._normaliser[0])
        return np.minimum(_SHARE["background"] * self.config.fraud_rate * m, 0.9)

    def apply_bursts(
        self, cols: dict[str, np.ndarray], index: np.ndarray, rng: np.random.Generator
    ) -> None:
        for site, start, end in self.bursts:
            hit = (index >= start) & (index < end) & (cols["site"] == site)
            hit &= rng.random(len(index)) < _BURST_HIT
            cols["fraud"] |= hit
            cols["kind"][hit] = 1
            cols["cat"][hit] = np.where(rng.random(int(hit.sum())) < 0.5, 4, 0)  # online/grocery

    def apply_ring(
        self, cols: dict[str, np.ndarray], index: np.ndarray, rng: np.random.Generator
    ) -> None:
        for start, end in self.ring_windows:
            hit = (
                (index >= start) & (index < end) & (rng.random(len(index)) < self.ring_probability)
            )
            k = int(hit.sum())
            cols["account"][hit] = rng.choice(self.ring_accounts, size=k)
            cols["site"][hit] = rng.choice(self.ring_sites, size=k)
            cols["cat"][hit] = 4  # online
            cols["fraud"] |= hit
            cols["kind"][hit] = 2

    def disguise_fraud(self, cols: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        """Give fraud its pattern: big and foreign before the drift, small card tests after."""
        n = len(cols["site"])
        fraud, kind, after = cols["fraud"], cols["kind"], cols["after"]
        big = fraud & (kind == 0) & ~after
        small = fraud & (((kind == 0) & after) | (kind == 1))
        amount = cols["amount"]
        amount[big] *= rng.uniform(2.0, 6.0, int(big.sum()))
        amount[small] = rng.uniform(0.5, 12.0, int(small.sum()))
        amount[kind == 2] = rng.uniform(200.0, 900.0, int((kind == 2).sum()))
        foreign_p = np.where(fraud, np.where(after, 0.15, 0.5), 0.03)
        cols["foreign"] = (rng.random(n) < foreign_p).astype(np.float64)
        absent_p = np.where(fraud, np.where(after, 0.5, 0.8), 0.05)
        present = ~_ONLINE[cols["cat"]] & (rng.random(n) >= absent_p)
        cols["card_present"] = present.astype(np.float64)

    def features(
        self, cols: dict[str, np.ndarray], ts: np.ndarray, since: np.ndarray, count: np.ndarray
    ) -> np.ndarray:
        """The ``FEATURES`` matrix, one row per event."""
        amount, account = cols["amount"], cols["account"]
        angle = 2 * np.pi * ((ts % 86_400_000) / 86_400_000.0)
        hour = cols["hour"]
        since_capped = np.minimum(since, 30 * 86_400.0)
        return np.column_stack(
            [
                np.log1p(amount),
                amount / np.exp(self.account_mu[account]),
                np.sin(angle),
                np.cos(angle),
                (hour < 6).astype(np.float64),
                _RISK_BEFORE[cols["cat"]],
                cols["card_present"],
                cols["foreign"],
                (self.account_home[account] != cols["site"]).astype(np.float64),
                np.log1p(since_capped),
                count,
            ]
        )

    def pick_merchants(self, cols: dict[str, np.ndarray], rng: np.random.Generator) -> None:
        """A store's own merchants for in-person categories, shared web merchants online."""
        n = len(cols["site"])
        cat, site = cols["cat"], cols["site"]
        local = (site * len(CATEGORIES) + cat) * _LOCAL_PER_CAT + rng.integers(0, _LOCAL_PER_CAT, n)
        web_base = self.n_sites * len(CATEGORIES) * _LOCAL_PER_CAT
        web = web_base + cat * _WEB_PER_CAT + rng.integers(0, _WEB_PER_CAT, n)
        ring = web_base + len(CATEGORIES) * _WEB_PER_CAT + rng.integers(0, _RING_MERCHANTS, n)
        cols["merchant"] = np.where(cols["kind"] == 2, ring, np.where(_ONLINE[cat], web, local))
