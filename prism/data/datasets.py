"""Real data as event logs: River's bundled sets and the public credit-card CSV.

River 0.26.1 ships three of the sets we want as files inside the wheel, so
they work offline: ``Shuttle`` (``shuttle.csv.gz``: 49,097 NASA shuttle sensor
readings, 9 features, ~7 % anomalies — the IoT case), ``Phishing``
(``phishing.csv.gz``: 1,250 web pages, 9 features) and ``Bananas``
(``banana.zip``: 5,300 points, 2 features). River's ``CreditCard`` is a
*remote* dataset (downloaded on first use), so it is never used here; the same
public data is read from a CSV the user already has (``Time, V1..V28, Amount,
Class``). Nothing in this module touches the network.

The data have no sites, so each row gets one drawn with
:func:`prism.data.splitting.split_by_class`: every site's class mix follows
``Dirichlet(skew)``. Row order (the stream) is kept; rows without a time get
``interval_ms`` apart.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prism.data.fraud import DEFAULT_START_MS
from prism.data.labels import LabelPolicy, LateLabels, Record, attach, seeded
from prism.data.splitting import assign_regions, region_names, site_names, split_by_class
from schemas.eventlog import BadRecord

log = logging.getLogger(__name__)

# name -> (River class name, record type written by default)
BUNDLED = {
    "shuttle": ("Shuttle", "SensorReading"),
    "phishing": ("Phishing", "Transaction"),
    "bananas": ("Bananas", "Transaction"),
}
CREDITCARD_COLUMNS = ("Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class")


class DatasetError(ValueError):
    """A dataset is missing or not in the expected layout."""


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """How a dataset becomes an event log (``prism dataset export``)."""

    sites: int = 10
    regions: int = 2
    skew: float = 0.5
    seed: int = 0
    record_type: str | None = None
    interval_ms: int = 1000
    start_ms: int = DEFAULT_START_MS
    chunk_size: int = 50_000
    labels: LabelPolicy = field(default_factory=lambda: LabelPolicy(mode="inline"))


def load_bundled(name: str) -> tuple[list[dict[str, float]], np.ndarray]:
    """Features and boolean targets of a River bundled set, read from the wheel."""
    if name not in BUNDLED:
        raise DatasetError(f"unknown dataset {name!r}: choose from {', '.join(BUNDLED)}")
    from river import datasets  # imported late: River is heavy and only needed here

    dataset = getattr(datasets, BUNDLED[name][0])()
    if not Path(dataset.path).is_file():
        raise DatasetError(f"River's {name} file is missing from the installed wheel")
    xs, ys = [], []
    for x, y in dataset:
        xs.append({str(k): float(v) for k, v in x.items()})
        ys.append(bool(y))
    return xs, np.array(ys, dtype=bool)


def export_bundled(name: str, config: ExportConfig) -> Iterator[list[Record]]:
    """Chunks of records for a River bundled set, sites drawn with skew."""
    xs, ys = load_bundled(name)
    ts = config.start_ms + np.arange(len(ys), dtype=np.int64) * config.interval_ms
    rtype = config.record_type or BUNDLED[name][1]
    yield from _emit(name, rtype, xs, ys, ts, [0.0] * len(ys), config)


def read_creditcard(
    path: Path, on_error: Callable[[BadRecord], None]
) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray, list[float]]:
    """``(features, labels, seconds, amounts)`` from the public credit-card CSV layout."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (the credit-card CSV is never downloaded)")
    names = CREDITCARD_COLUMNS[1:29]
    xs, ys, secs, amounts = [], [], [], []
    with path.open(newline="", encoding="utf-8") as fo:
        rows = csv.reader(fo)
        header = tuple(next(rows, ()))
        if header != CREDITCARD_COLUMNS:
            raise DatasetError(f"{path}: expected the header {','.join(CREDITCARD_COLUMNS)}")
        for line_no, row in enumerate(rows, start=2):
            try:
                values = [float(v) for v in row]
                if len(values) != len(CREDITCARD_COLUMNS) or not np.isfinite(values).all():
                    raise ValueError(f"expected {len(CREDITCARD_COLUMNS)} finite numbers")
                if values[30] not in (0.0, 1.0) or values[29] < 0:
                    raise ValueError("Class must be 0 or 1 and Amount >= 0")
            except ValueError as e:
                on_error(BadRecord(line_no, str(e), ",".join(row)[:200]))
                continue
            xs.append(dict(zip(names, values[1:29], strict=True)) | {"Amount": values[29]})
            ys.append(values[30] == 1.0)
            secs.append(values[0])
            amounts.append(values[29])
    return xs, np.array(ys, dtype=bool), np.array(secs), amounts


def export_creditcard(
    path: Path, config: ExportConfig, on_error: Callable[[BadRecord], None]
) -> Iterator[list[Record]]:
    """Chunks of Transactions from the user's credit-card CSV (``Time`` -> ``ts``)."""
    xs, ys, secs, amounts = read_creditcard(path, on_error)
    ts = config.start_ms + np.round(secs * 1000).astype(np.int64)
    order = np.argsort(ts, kind="stable")  # the public file is sorted; be safe anyway
    xs = [xs[i] for i in order.tolist()]
    amounts = [amounts[i] for i in order.tolist()]
    yield from _emit("creditcard", "Transaction", xs, ys[order], ts[order], amounts, config)


def _emit(
    name: str,
    rtype: str,
    xs: list[dict[str, float]],
    ys: np.ndarray,
    ts: np.ndarray,
    amounts: list[float],
    config: ExportConfig,
) -> Iterator[list[Record]]:
    if rtype not in ("Transaction", "SensorReading"):
        raise DatasetError(f"record type must be Transaction or SensorReading, got {rtype!r}")
    if len(ys) == 0:
        raise DatasetError(f"{name}: no usable rows")
    rng, label_rng = seeded(config.seed)
    site = split_by_class(ys, config.sites, alpha=config.skew, rng=rng)
    sites = np.array(site_names(config.sites), dtype=object)
    regions = np.array(region_names(config.regions), dtype=object)[
        assign_regions(config.sites, config.regions)
    ]
    late = LateLabels(config.labels, label_rng)
    for start in range(0, len(ys), config.chunk_size):
        stop = min(start + config.chunk_size, len(ys))
        s = site[start:stop]
        rows = zip(
            range(start, stop),
            ts[start:stop].tolist(),
            sites[s].tolist(),
            regions[s].tolist(),
            xs[start:stop],
            amounts[start:stop],
            strict=True,
        )
        events = [(rtype, _record(name, rtype, *row)) for row in rows]
        yield attach(config.labels, late, events, ts[start:stop], ys[start:stop])
    if config.labels.mode == "late":
        yield late.drain()


def _record(
    name: str, rtype: str, i: int, ts: int, site: str, region: str, x: dict, amount: float
) -> dict[str, Any]:
    record: dict[str, Any] = {"event_id": f"{name}-{i:07d}", "ts": ts, "site_id": site}
    record["region"] = region
    if rtype == "Transaction":
        record |= {"account_id": f"{name}-{i:07d}", "merchant_id": "unknown", "amount": amount}
        record["currency"] = "EUR"
    else:
        record["device_id"] = f"{site}-{name}"
    record |= {"features": x, "label": None}
    return record
