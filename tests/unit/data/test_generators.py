"""Synthetic streams: determinism, fraud rate, non-IID skew, drift, late labels, failures."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prism.data.fraud import CATEGORIES, FraudConfig, generate_fraud
from prism.data.iot import IotConfig, generate_iot
from prism.data.labels import LabelPolicy
from prism.data.splitting import mean_js_distance, mean_tv_distance, mix_by_site, split_by_class
from schemas.eventlog import open_writer

Records = list[tuple[str, dict[str, Any]]]


@cache
def fraud(**kw: Any) -> Records:
    return [r for chunk in generate_fraud(FraudConfig(**kw)) for r in chunk]


@cache
def iot(**kw: Any) -> Records:
    return [r for chunk in generate_iot(IotConfig(**kw)) for r in chunk]


def of_type(records: Records, rtype: str) -> list[dict[str, Any]]:
    return [r for t, r in records if t == rtype]


def fraud_truth(records: Records) -> tuple[list[dict[str, Any]], np.ndarray]:
    labels = {r["event_id"]: r["label"] for r in of_type(records, "Label")}
    txs = of_type(records, "Transaction")
    return txs, np.array([labels[t["event_id"]] for t in txs])


@pytest.mark.parametrize("gen", [fraud, iot])
def test_same_seed_same_stream_other_seed_other_stream(gen: Any) -> None:
    assert gen(events=3000, seed=5) == gen.__wrapped__(events=3000, seed=5)
    assert gen(events=3000, seed=5) != gen(events=3000, seed=6)


def test_seeded_avro_files_are_byte_identical(tmp_path: Path) -> None:
    paths = [tmp_path / "a.avro", tmp_path / "b.avro"]
    for path in paths:
        with open_writer(path, sync_marker=b"0123456789abcdef") as writer:
            for chunk in generate_fraud(FraudConfig(events=2000, seed=1)):
                writer.write_many(chunk)
    assert paths[0].read_bytes() == paths[1].read_bytes()


@pytest.mark.parametrize("gen", [fraud, iot])
def test_time_order_and_one_late_label_per_event(gen: Any) -> None:
    records = gen(events=20_000, seed=2)
    ts = [r["ts"] for _, r in records]
    assert ts == sorted(ts)
    data = [r for t, r in records if t != "Label"]
    assert len(data) == 20_000
    position = {r["event_id"]: i for i, (t, r) in enumerate(records) if t != "Label"}
    labels = of_type(records, "Label")
    assert sorted(r["event_id"] for r in labels) == sorted(position)
    for i, (t, r) in enumerate(records):
        if t == "Label":
            assert position[r["event_id"]] < i  # a label never precedes its event
    assert all(r["label"] is None for r in data)


def test_label_delays_follow_the_policy() -> None:
    policy = LabelPolicy(median_delay_ms=300_000, sigma=0.5)
    records = fraud(events=10_000, seed=3, labels=policy)
    ts_of = {r["event_id"]: r["ts"] for r in of_type(records, "Transaction")}
    delays = np.array([r["ts"] - ts_of[r["event_id"]] for r in of_type(records, "Label")])
    assert 250_000 < np.median(delays) < 350_000


@pytest.mark.parametrize("gen", [fraud, iot])
def test_label_mode_does_not_change_the_events(gen: Any) -> None:
    def events(mode: str) -> list[tuple[str, float]]:
        records = gen(events=3000, seed=4, labels=LabelPolicy(mode=mode))
        return [
            (r["event_id"], r["features"][next(iter(r["features"]))])
            for t, r in records
            if t != "Label"
        ]

    assert events("late") == events("inline") == events("none")


def test_inline_and_no_labels() -> None:
    inline = fraud(events=2000, seed=1, labels=LabelPolicy(mode="inline"))
    assert {t for t, _ in inline} == {"Transaction"}
    assert all(isinstance(r["label"], bool) for _, r in inline)
    none = fraud(events=2000, seed=1, labels=LabelPolicy(mode="none"))
    assert all(r["label"] is None for _, r in none)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fraud_rate_is_in_the_realistic_range(seed: int) -> None:
    _, y = fraud_truth(fraud(events=40_000, seed=seed))
    assert 0.005 <= y.mean() <= 0.02


def _category_skew(alpha: float) -> tuple[float, float]:
    txs = of_type(fraud(events=40_000, sites=20, skew=alpha, seed=4), "Transaction")
    site = np.array([int(t["site_id"].rpartition("-")[2]) for t in txs])
    names = {c: i for i, c in enumerate((*CATEGORIES, "ring"))}
    cat = np.array([names[t["merchant_id"].split("-")[-2]] for t in txs])
    mix = mix_by_site(site, cat, 20, len(names))
    return mean_js_distance(mix), mean_tv_distance(mix)


def test_small_alpha_makes_sites_measurably_more_different() -> None:
    js_small, tv_small = _category_skew(0.1)
    js_large, tv_large = _category_skew(100.0)
    assert js_small > 5 * js_large
    assert tv_small > 3 * tv_large


def test_drift_changes_the_fraud_pattern() -> None:
    txs, y = fraud_truth(fraud(events=60_000, seed=7, drift_at=0.5, rate_per_s=0.25))
    amount = np.array([t["amount"] for t in txs])
    night = np.array([t["features"]["is_night"] for t in txs])
    half = len(txs) // 2
    before, after = y[:half], y[half:]
    assert np.median(amount[:half][before]) > 4 * np.median(amount[half:][after])
    # Legit spending does not drift: the change is in the fraud, not the world.
    ratio = np.median(amount[:half][~before]) / np.median(amount[half:][~after])
    assert 0.8 < ratio < 1.25
    assert night[:half][before].mean() > night[half:][after].mean()


def test_bursts_and_the_ring_are_there() -> None:
    txs, y = fraud_truth(fraud(events=40_000, seed=8))
    ring = np.array([t["merchant_id"].startswith("m-ring-") for t in txs])
    assert ring.sum() > 10 and y[ring].all()
    sites = np.array([t["site_id"] for t in txs])
    peak = 0.0  # card-testing bursts: some store's fraud rate jumps for a while
    for site in np.unique(sites):
        at_site = y[sites == site]
        if len(at_site) >= 200:
            peak = max(peak, np.convolve(at_site, np.ones(200) / 200, mode="valid").max())
    assert peak > 10 * y.mean()


def test_velocity_features_count_recent_use_of_the_card() -> None:
    txs = of_type(fraud(events=20_000, seed=9, labels=LabelPolicy(mode="none")), "Transaction")
    by_account: dict[str, list[int]] = defaultdict(list)
    for t in txs:
        times = by_account[t["account_id"]]
        expected = sum(1 for s in times if s > t["ts"] - 3_600_000 and s < t["ts"])
        assert t["features"]["tx_count_1h"] == expected
        times.append(t["ts"])


def test_iot_failures_are_preceded_by_growing_anomalies_then_a_gap() -> None:
    cfg = dict(events=40_000, sites=10, seed=3, drift_at=1.0, labels=LabelPolicy(mode="inline"))
    readings = of_type(iot(**cfg), "SensorReading")
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in readings:
        by_device[r["device_id"]].append(r)
    runs = checked = 0
    for rows in by_device.values():
        labels = [r["label"] for r in rows]
        for i in range(1, len(rows) - 1):
            if labels[i] and not labels[i + 1]:  # the failure: the last anomalous reading
                start = i
                while start > 0 and labels[start - 1]:
                    start -= 1
                runs += 1
                first, last = rows[start]["features"], rows[i]["features"]
                checked += last["kurtosis"] > first["kurtosis"] + 2
                assert rows[i + 1]["ts"] - rows[i]["ts"] > 2 * 10_000  # down after failing
    assert runs >= 5 and checked >= 0.8 * runs


def test_iot_has_link_gaps_and_exact_counts() -> None:
    readings = of_type(iot(events=30_000, sites=10, seed=1), "SensorReading")
    assert len(readings) == 30_000
    last: dict[str, int] = {}
    gaps = 0
    for r in readings:
        prev = last.get(r["device_id"])
        gaps += prev is not None and r["ts"] - prev > 3 * 10_000
        last[r["device_id"]] = r["ts"]
    assert gaps >= 10


def test_iot_machines_have_their_own_baselines() -> None:
    readings = of_type(iot(events=20_000, sites=10, seed=2), "SensorReading")
    temps: dict[str, list[float]] = defaultdict(list)
    for r in readings:
        temps[r["site_id"]].append(r["features"]["temperature"])
    means = np.array([np.mean(v) for v in temps.values()])
    within = np.mean([np.std(v) for v in temps.values()])
    assert means.std() > within


def test_split_by_class_skew_grows_as_alpha_shrinks() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(50_000) < 0.1

    def skew(alpha: float) -> float:
        site = split_by_class(labels, 10, alpha=alpha, rng=np.random.default_rng(1))
        return mean_tv_distance(mix_by_site(site, labels.astype(int), 10, 2))

    assert skew(0.1) > 5 * skew(100.0)
