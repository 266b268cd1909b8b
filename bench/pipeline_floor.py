"""(d) The pipeline floor: everything a central worker must do per event except learning.

A bound for bench/central_throughput.py's goal "(a) >= 50 % of (c)". The
ceiling (c) consumes and decodes the transactions topic only. A central
worker must also consume and decode the event's label (fraud labels come
late, on their own topic) and encode and produce one Score. This loop does
exactly that with the worker's own consumer and producer settings
(``runtime.kafka_config.consumer_config``,
``runtime.kafka_config.producer_config``) and its hand-written Transaction and
Label decoders and Score encoder (``schemas.hotpath_events``,
``schemas.hotpath``), and nothing else: no model, no join, no checkpoint, no
dead letters. However fast the learner became, a worker
could not beat this loop.

Run as a worker process by the bench:
``python bench/pipeline_floor.py BOOTSTRAP EVENTS LABELS SCORES GROUP WORKER [latency]``;
it stops once it has been caught up for ``IDLE_S``. With ``latency`` it is
the *latency* floor (``bench/latency_trace.py --floor``): it takes what is
ready instead of waiting up to 50 ms to fill a batch, and its producer
lingers as a worker's does (``BatchPolicy().linger_ms``).
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, Producer

from runtime.kafka_config import consumer_config, producer_config
from schemas import Codec
from schemas.hotpath import LabelDecoder, ScoreEncoder
from schemas.hotpath_events import TransactionDecoder
from streams.central.batching import BatchPolicy
from streams.central.scores import produce_waiting

BATCH = 1000
IDLE_S = 3.0


def run(
    bootstrap: str,
    events: str,
    labels: str,
    scores: str,
    group: str,
    worker: str,
    mode: str = "throughput",
) -> int:
    codec = Codec()
    labels_in, scores_out = LabelDecoder(codec), ScoreEncoder(codec)  # as the worker does
    events_in = TransactionDecoder(codec)
    consumer = Consumer(consumer_config(bootstrap, group, worker))
    latency = mode == "latency"
    linger = {"linger_ms": BatchPolicy().linger_ms} if latency else {}
    producer = Producer(producer_config(bootstrap, **linger))
    consumer.subscribe([events, labels])
    last = time.monotonic()
    seen = 0
    while time.monotonic() - last < IDLE_S or not seen:
        if latency:  # what is ready, else block for the first record only
            messages = consumer.consume(BATCH, timeout=0) or consumer.consume(1, timeout=0.05)
        else:
            messages = consumer.consume(BATCH, timeout=0.05)
        if not messages:
            continue
        last = time.monotonic()
        seen += len(messages)
        now = time.time() * 1000
        rows = []
        for m in messages:
            if m.error() is not None:
                continue
            if m.topic() == labels:
                labels_in.decode(m.value())
                continue
            r = events_in.decode(m.value())
            rows.append((r["event_id"], r["ts"], 0.5, r.get("label"), 0.0))
        values = scores_out.encode(
            rows,
            scored_at=int(now),
            node_id=worker,
            model_name="floor",
            model_version=0,
            source="central",
        )
        for row, value in zip(rows, values, strict=True):
            produce_waiting(producer, scores, value, row[0].encode())
        producer.poll(0)
    producer.flush(60)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:8]))
