"""Real datasets as event logs: River's bundled files and the credit-card CSV layout."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prism.data.datasets import (
    CREDITCARD_COLUMNS,
    DatasetError,
    ExportConfig,
    export_bundled,
    export_creditcard,
    load_bundled,
)
from prism.data.labels import LabelPolicy
from prism.data.splitting import mean_tv_distance, mix_by_site
from schemas.eventlog import BadRecord, open_writer, read_events


def _flat(chunks: Any) -> list[tuple[str, dict[str, Any]]]:
    return [r for chunk in chunks for r in chunk]


@pytest.mark.parametrize(
    ("name", "rows", "features", "rtype"),
    [
        ("shuttle", 49_097, 9, "SensorReading"),
        ("phishing", 1_250, 9, "Transaction"),
        ("bananas", 5_300, 2, "Transaction"),
    ],
)
def test_river_bundled_sets_load_offline(name: str, rows: int, features: int, rtype: str) -> None:
    xs, ys = load_bundled(name)
    assert len(xs) == rows and len(xs[0]) == features
    assert 0 < ys.mean() < 1
    records = _flat(export_bundled(name, ExportConfig(sites=5, seed=1)))
    assert len(records) == rows
    assert {t for t, _ in records} == {rtype}
    assert sum(r["label"] for _, r in records) == ys.sum()


def test_shuttle_is_rare_anomalies() -> None:
    _, ys = load_bundled("shuttle")
    assert 0.05 < ys.mean() < 0.09


def test_unknown_dataset_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match="choose from"):
        load_bundled("mnist")


def test_export_skews_class_mix_by_site() -> None:
    def skew(alpha: float) -> float:
        cfg = ExportConfig(sites=8, skew=alpha, seed=2)
        records = [r for _, r in _flat(export_bundled("phishing", cfg))]
        site = np.array([int(r["site_id"].rpartition("-")[2]) for r in records])
        y = np.array([r["label"] for r in records], dtype=int)
        return mean_tv_distance(mix_by_site(site, y, 8, 2))

    assert skew(0.1) > 3 * skew(100.0)


def _no_bad_rows(bad: BadRecord) -> None:
    raise AssertionError(f"unexpected bad row: {bad}")


def _creditcard_csv(path: Path, n: int, *, bad_rows: bool = False) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as fo:
        writer = csv.writer(fo, quoting=csv.QUOTE_NONNUMERIC)  # quoted like the public file
        writer.writerow(CREDITCARD_COLUMNS)
        for i in range(n):
            v = rng.normal(size=28).round(6).tolist()
            writer.writerow(
                [float(i * 3), *v, round(float(rng.lognormal(3, 1)), 2), int(i % 50 == 0)]
            )
        if bad_rows:
            fo.write("12,not-a-number\n")
            writer.writerow([1e9, *([0.0] * 28), -5.0, 0])
    return path


def test_creditcard_csv_becomes_transactions_with_time(tmp_path: Path) -> None:
    csv_path = _creditcard_csv(tmp_path / "creditcard.csv", 200)
    cfg = ExportConfig(sites=4, seed=3, start_ms=0)
    records = _flat(export_creditcard(csv_path, cfg, on_error=_no_bad_rows))
    assert len(records) == 200
    first = records[0][1]
    assert records[0][0] == "Transaction"
    assert first["ts"] == 0 and records[1][1]["ts"] == 3000
    assert set(first["features"]) == {f"V{i}" for i in range(1, 29)} | {"Amount"}
    assert first["amount"] == first["features"]["Amount"]
    assert sum(r["label"] for _, r in records) == 4


def test_creditcard_bad_rows_are_reported_by_line(tmp_path: Path) -> None:
    csv_path = _creditcard_csv(tmp_path / "creditcard.csv", 10, bad_rows=True)
    bad: list[BadRecord] = []
    records = _flat(export_creditcard(csv_path, ExportConfig(sites=2), on_error=bad.append))
    assert len(records) == 10
    assert [b.line_no for b in bad] == [12, 13]
    assert "Amount" in bad[1].reason


def test_creditcard_wrong_header_or_missing_file(tmp_path: Path) -> None:
    wrong = tmp_path / "other.csv"
    wrong.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DatasetError, match="header"):
        _flat(export_creditcard(wrong, ExportConfig(), on_error=_no_bad_rows))
    with pytest.raises(DatasetError, match="never downloaded"):
        _flat(export_creditcard(tmp_path / "nope.csv", ExportConfig(), on_error=_no_bad_rows))


def test_late_labels_and_a_log_round_trip(tmp_path: Path) -> None:
    cfg = ExportConfig(sites=3, seed=1, labels=LabelPolicy(mode="late", median_delay_ms=5000))
    records = _flat(export_bundled("bananas", cfg))
    assert sum(t == "Label" for t, _ in records) == 5300
    path = tmp_path / "bananas.avro"
    with open_writer(path) as writer:
        writer.write_many(records)
    assert [(e.record_type, e.record) for e in read_events(path)] == records
