"""Replay throughput into the real broker vs a bare producer of the same bytes.

Not a test: prints events/s of both, measured in this run, and their ratio.
Goals: replay >= 50 % of the bare producer and >= 50,000 events/s.

- **bare**: a confluent-kafka producer with replay's exact settings
  (idempotent, acks=all) sending pre-encoded (topic, key, value) triples
  from memory, one delivery callback per message, ``poll(0)`` per batch;
- **replay**: ``prism.data.replay.replay`` on the Avro event log file —
  reading, keying, encoding (the raw path) and producing.

Each side runs ``--rounds`` times alternately, each round into its own fresh
topics; both the best rounds and the median of per-round ratios are shown,
because a shared 2-core machine makes single rounds noisy.
The broker is the one in ``load_settings()`` (``prism stack up`` or
``PRISM_KAFKA_BOOTSTRAP``).

Run: ``.venv/bin/python bench/bench_replay.py [--events 500000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from prism.data.fraud import FraudConfig, generate_fraud
from prism.data.replay import ReplayOptions, replay, resolve_topics
from prism.data.replay_source import Source
from runtime.kafka_config import replay_producer_config
from runtime.settings import load_settings
from schemas import Codec
from schemas.eventlog import open_writer

GOAL_RATIO, GOAL_RATE = 0.5, 50_000
SOURCE_TOPICS = resolve_topics("auto", lambda name: f"bench-src.{name}")


def make_log(path: Path, events: int) -> None:
    with open_writer(path) as writer:
        for chunk in generate_fraud(FraudConfig(events=events, sites=50, seed=11)):
            writer.write_many(chunk)


CREATED: list[str] = []  # deleted at the end, so runs leave no data behind


def fresh_topics(admin: AdminClient, tag: str, partitions: int) -> dict[str, str]:
    prefix = f"bench.{tag}.{uuid.uuid4().hex[:8]}."
    topics = resolve_topics("auto", lambda name: prefix + name)
    names = sorted(set(topics.values()))
    CREATED.extend(names)
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result(timeout=30)
    return topics


def bare(bootstrap: str, messages: list, topics: dict[str, str]) -> float:
    """Events/s of a bare producer sending pre-encoded bytes."""
    rename = {SOURCE_TOPICS[rtype]: topic for rtype, topic in topics.items()}
    batch = [(rename[t], k, v) for t, k, v, _ in messages]
    failed = 0

    def on_delivery(err: object, msg: object) -> None:
        nonlocal failed
        failed += err is not None

    producer = Producer(replay_producer_config(bootstrap))
    start = time.perf_counter()
    produce, poll = producer.produce, producer.poll
    for i in range(0, len(batch), 2000):
        for topic, key, value in batch[i : i + 2000]:
            while True:
                try:
                    produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(0.05)
        poll(0)
    producer.flush(120)
    seconds = time.perf_counter() - start
    if failed:
        sys.exit(f"bare producer: {failed} deliveries failed")
    return len(batch) / seconds


def run_replay(bootstrap: str, log_path: Path, topics: dict[str, str], codec: Codec) -> float:
    options = ReplayOptions(path=log_path, progress=False)
    summary = replay(options, bootstrap=bootstrap, topics=topics, codec=codec)
    if summary.failed or summary.bad_records:
        sys.exit(f"replay: {summary.line()}")
    print(f"  {summary.line()} raw_path={summary.raw_path}")
    return summary.events_per_s


def measure(
    args: argparse.Namespace, bootstrap: str, admin: AdminClient, codec: Codec, encoding: str
) -> tuple[list[float], list[float]]:
    """Alternate rounds of bare and replay; their events/s."""
    with tempfile.TemporaryDirectory() as tmp:
        log_path = args.log or Path(tmp) / "bench.avro"
        if args.log is None:
            make_log(log_path, args.events)
        source = Source(log_path, codec=codec, topics=SOURCE_TOPICS, on_bad=print, decode=True)
        messages = [m for batch in source.batches() for m in batch]
        print(
            f"log: {log_path.stat().st_size / 2**20:.0f} MiB, {len(messages):,} records, "
            f"broker {bootstrap}, encoding {encoding}"
        )
        bare_rates, replay_rates = [], []
        for round_no in range(1, args.rounds + 1):
            bare_rates.append(bare(bootstrap, messages, fresh_topics(admin, "bare", 3)))
            print(f"round {round_no}: bare   {bare_rates[-1]:>10,.0f} events/s")
            topics = fresh_topics(admin, "replay", 3)
            replay_rates.append(run_replay(bootstrap, log_path, topics, codec))
            ratio = replay_rates[-1] / bare_rates[-1]
            print(f"round {round_no}: replay {replay_rates[-1]:>10,.0f} events/s ({ratio:.0%})")
    return bare_rates, replay_rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000, help="transactions (+ labels)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log", type=Path, help="replay this log instead of a generated one")
    args = parser.parse_args()
    settings = load_settings()
    if not settings.kafka_bootstrap:
        print("no broker: run `prism stack up` or set PRISM_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    bootstrap = settings.kafka_bootstrap
    codec = Codec(mode=settings.encoding, max_bytes=settings.max_message_bytes)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        rates = measure(args, bootstrap, admin, codec, settings.encoding)
    finally:
        if CREATED:
            for future in admin.delete_topics(CREATED).values():
                future.result(timeout=30)
    bare_rates, replay_rates = rates
    best_bare, best_replay = max(bare_rates), max(replay_rates)
    paired = statistics.median(r / b for r, b in zip(replay_rates, bare_rates, strict=True))
    print(f"bare producer (pre-encoded bytes): {best_bare:>10,.0f} events/s (best round)")
    print(f"prism replay (Avro log file):      {best_replay:>10,.0f} events/s (best round)")
    print(
        f"ratio replay/bare: best/best {best_replay / best_bare:.0%}, median of rounds "
        f"{paired:.0%} (goal >= {GOAL_RATIO:.0%}); replay "
        f"{'meets' if best_replay >= GOAL_RATE else 'MISSES'} the {GOAL_RATE:,} events/s goal"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
