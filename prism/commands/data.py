"""``prism datagen``, ``prism dataset export`` and ``prism replay``: logs in, logs out.

Thin handlers: parse flags into the configs of :mod:`prism.data`, run, print
one summary line. The data code never sees argparse or the environment.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prism.data import paused_gc
from prism.data.errors import DataError
from prism.data.labels import LABEL_MODES, LabelPolicy, Record
from runtime.errors import StackError
from runtime.settings import Settings
from schemas.eventlog import EventLogError, open_writer

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    _register_datagen(subparsers)
    _register_dataset(subparsers)
    _register_replay(subparsers)


def _common(p: argparse.ArgumentParser, *, labels: str, sites: int, regions: int) -> None:
    p.add_argument("--sites", type=int, default=sites, help="stores / machines / sites")
    p.add_argument("--regions", type=int, default=regions, help="regions the sites fall into")
    p.add_argument(
        "--skew",
        type=float,
        default=0.5,
        metavar="ALPHA",
        help="Dirichlet alpha of per-site mixes; small = very non-IID",
    )
    p.add_argument("--seed", type=int, default=0, help="same seed, same log")
    p.add_argument("--out", type=Path, required=True, help="FILE.avro, FILE.jsonl or .jsonl.gz")
    p.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default=labels,
        help="late Label events, inline, or none",
    )
    p.add_argument(
        "--label-delay-ms",
        type=int,
        default=600_000,
        help="median delay of late labels, log-normal (default 10 min)",
    )


def _register_datagen(subparsers: Any) -> None:
    gen = subparsers.add_parser("datagen", help="write a synthetic event log with ground truth")
    kinds = gen.add_subparsers(dest="kind", metavar="KIND", required=True)
    fraud = kinds.add_parser("fraud", help="card transactions: bursts, a fraud ring, drift")
    fraud.add_argument("--events", type=int, required=True, help="transactions to generate")
    _common(fraud, labels="late", sites=20, regions=4)
    fraud.add_argument("--fraud-rate", type=float, default=0.01, help="target share of fraud")
    fraud.add_argument("--drift-at", type=float, default=0.5, help="drift point, a fraction")
    fraud.add_argument("--rate-per-s", type=float, default=5.0, help="events/s of event time")
    fraud.set_defaults(handler=handle_datagen)
    iot = kinds.add_parser("iot", help="sensor readings: wear, failures, outages, drift")
    iot.add_argument("--events", type=int, required=True, help="readings to generate")
    _common(iot, labels="late", sites=20, regions=4)
    iot.add_argument("--devices-per-site", type=int, default=2, help="sensors per machine")
    iot.add_argument("--period-ms", type=int, default=10_000, help="time between readings")
    iot.add_argument("--drift-at", type=float, default=0.5, help="drift point, a fraction")
    iot.add_argument("--failures-per-machine", type=float, default=2.0, help="expected failures")
    iot.set_defaults(handler=handle_datagen)


def _register_dataset(subparsers: Any) -> None:
    ds = subparsers.add_parser("dataset", help="real datasets as event logs (never downloaded)")
    actions = ds.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write a dataset as an event log split over sites")
    export.add_argument(
        "name",
        choices=("shuttle", "phishing", "bananas", "creditcard"),
        help="the data set (creditcard: your own CSV, the others ship with River)",
    )
    _common(export, labels="inline", sites=10, regions=2)
    export.add_argument(
        "--input", type=Path, help="creditcard: the CSV (Time,V1..V28,Amount,Class)"
    )
    export.add_argument(
        "--record-type",
        choices=("Transaction", "SensorReading"),
        help="override the record type (default per dataset)",
    )
    export.add_argument(
        "--interval-ms",
        type=int,
        default=1000,
        help="time between rows of sets without a time column",
    )
    export.add_argument("--strict", action="store_true", help="stop at the first bad CSV row")
    export.set_defaults(handler=handle_dataset_export)


def _register_replay(subparsers: Any) -> None:
    rp = subparsers.add_parser("replay", help="replay an event log into Kafka")
    rp.add_argument("file", type=Path, help="an event log: .avro, .jsonl or .jsonl.gz")
    rp.add_argument(
        "--topic",
        default="auto",
        help="auto (by record type, PRISM_TOPIC_PREFIX) or one topic name",
    )
    rp.add_argument("--rate", default="max", help="events per second, or max (default)")
    rp.add_argument("--speedup", type=float, help="follow event time, X times faster")
    rp.add_argument("--limit", type=int, help="stop after N records of the file")
    rp.add_argument(
        "--label-delay",
        type=int,
        metavar="N",
        help="send inline labels as Label events N data events later",
    )
    rp.add_argument("--strict", action="store_true", help="stop at the first bad record")
    rp.add_argument("--report", type=Path, help="bad-record report (default FILE.errors.jsonl)")
    rp.add_argument(
        "--decode", action="store_true", help="decode and check every Avro record (slower)"
    )
    rp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: only on a terminal)",
    )
    rp.add_argument(
        "--wait-broker",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="wait this long for Kafka at the start, and for an acknowledgement during an "
        "outage, before giving up (default 300)",
    )
    rp.add_argument(
        "-X",
        dest="producer",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra confluent-kafka producer setting, repeatable",
    )
    rp.set_defaults(handler=handle_replay)


def _labels(args: argparse.Namespace) -> LabelPolicy:
    return LabelPolicy(mode=args.labels, median_delay_ms=args.label_delay_ms)


def _write(path: Path, chunks: Iterable[list[Record]], tag: str) -> dict[str, int]:
    """Stream chunks into the log; count records by type and positive labels.

    The log appears at ``path`` only when complete: the generators validate lazily, so a
    bad configuration fails after writing began, and a half-written file would pass
    for a log (the compose edges generate theirs only when it is missing).
    """
    marker = hashlib.blake2b(tag.encode(), digest_size=16).digest()
    counts: dict[str, int] = {"positive": 0}
    partial = path.with_name(f".partial-{path.name}")  # same suffix: same format
    try:
        with paused_gc(), open_writer(partial, sync_marker=marker) as writer:
            for chunk in chunks:
                writer.write_many(chunk)
                for rtype, record in chunk:
                    counts[rtype] = counts.get(rtype, 0) + 1
                    counts["positive"] += record["label"] is True
        partial.replace(path)
    except (EventLogError, OSError) as e:
        raise DataError(f"cannot write {path}: {e}") from e
    finally:
        partial.unlink(missing_ok=True)
    return counts


def _print_summary(what: str, path: Path, counts: dict[str, int], seconds: float) -> None:
    fields = " ".join(f"{k.lower()}={v}" for k, v in counts.items())
    print(f"{what}: out={path} {fields} seconds={seconds:.1f}")


def handle_datagen(args: argparse.Namespace, settings: Settings) -> int:
    from prism.data.fraud import FraudConfig, generate_fraud
    from prism.data.iot import IotConfig, generate_iot

    common: dict[str, Any] = dict(events=args.events, sites=args.sites, regions=args.regions)
    common |= dict(skew=args.skew, seed=args.seed, drift_at=args.drift_at, labels=_labels(args))
    start = time.perf_counter()
    try:
        if args.kind == "fraud":
            cfg: Any = FraudConfig(**common, fraud_rate=args.fraud_rate, rate_per_s=args.rate_per_s)
            chunks = generate_fraud(cfg)
        else:
            cfg = IotConfig(
                **common,
                devices_per_site=args.devices_per_site,
                period_ms=args.period_ms,
                failures_per_machine=args.failures_per_machine,
            )
            chunks = generate_iot(cfg)
        counts = _write(args.out, chunks, f"prism-{args.kind}-{args.seed}")
    except ValueError as e:
        raise DataError(f"datagen {args.kind}: {e}") from e
    _print_summary(f"datagen {args.kind}", args.out, counts, time.perf_counter() - start)
    return 0


def handle_dataset_export(args: argparse.Namespace, settings: Settings) -> int:
    from prism.data import datasets
    from prism.data.replay import BadRecordReport

    config = datasets.ExportConfig(
        sites=args.sites,
        regions=args.regions,
        skew=args.skew,
        seed=args.seed,
        record_type=args.record_type,
        interval_ms=args.interval_ms,
        labels=_labels(args),
    )
    start = time.perf_counter()
    report = BadRecordReport(
        args.out.with_name(args.out.name + ".errors.jsonl"), strict=args.strict
    )
    try:
        if args.name == "creditcard":
            if args.input is None:
                raise DataError("dataset creditcard needs --input creditcard.csv")
            chunks = datasets.export_creditcard(args.input, config, report)
        elif args.input is not None:
            raise DataError(f"--input is only for creditcard; {args.name} ships with River")
        else:
            chunks = datasets.export_bundled(args.name, config)
        counts = _write(args.out, chunks, f"prism-{args.name}-{args.seed}")
    except ValueError as e:  # DatasetError and bad configs
        raise DataError(f"dataset {args.name}: {e}") from e
    finally:
        report.close()
    counts["bad_rows"] = report.count
    _print_summary(f"dataset {args.name}", args.out, counts, time.perf_counter() - start)
    return 0


def handle_replay(args: argparse.Namespace, settings: Settings) -> int:
    from prism.data.replay import ReplayOptions, replay, resolve_topics
    from runtime.kafka_security import KafkaAuth, check_login
    from schemas import Codec

    if not settings.kafka_bootstrap:
        raise StackError("no Kafka address: run `prism stack up` or set PRISM_KAFKA_BOOTSTRAP")
    try:
        options = ReplayOptions(
            path=args.file,
            topic=args.topic,
            rate=_rate(args.rate),
            speedup=args.speedup,
            limit=args.limit,
            label_delay=args.label_delay,
            strict=args.strict,
            decode=args.decode,
            report=args.report,
            progress=args.progress,
            wait_broker=args.wait_broker,
            producer=_pairs(args.producer),
        )
    except ValueError as e:
        raise DataError(f"replay: {e}") from e
    codec = Codec(mode=settings.encoding, max_bytes=settings.max_message_bytes)
    topics = resolve_topics(args.topic, settings.topic)
    auth = KafkaAuth.from_settings(settings)
    check_login(settings.kafka_bootstrap, auth)
    summary = replay(
        options,
        bootstrap=settings.kafka_bootstrap,
        topics=topics,
        codec=codec,
        security=auth.librdkafka(),
    )
    print(summary.line())
    if summary.bad_records:
        print(f"replay: {summary.bad_records} bad record(s) skipped, see {options.report_path}")
    failure = summary.failure()
    if failure:
        print(f"prism: error: {failure}", file=sys.stderr)
    return 1 if failure else 0


def _rate(value: str) -> float | None:
    if value == "max":
        return None
    try:
        return float(value)
    except ValueError as e:
        raise DataError(
            f"--rate must be a number of events per second or max, not {value!r}"
        ) from e


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"-X expects KEY=VALUE, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs
