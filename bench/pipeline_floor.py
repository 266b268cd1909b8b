"""(d) The pipeline floor: everything a central worker must do per event except learning.

A bound for bench/central_throughput.py's goal "(a) >= 50 % of (c)". The
ceiling (c) consumes and decodes the transactions topic only. A central
worker must also consume and decode the event's label (fraud labels come
late, on their own topic) and encode and produce one Score. This loop does
exactly that with the worker's own consumer and producer settings
(``streams.central.kafka_loop.consumer_config``,
``streams.central.run.producer_config``) and nothing else: no model, no join,
no checkpoint, no dead letters. However fast the learner became, a worker
could not beat this loop.

Run as a worker process by the bench:
``python bench/pipeline_floor.py BOOTSTRAP EVENTS LABELS SCORES GROUP WORKER``;
it stops once it has been caught up for ``IDLE_S``.
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, Producer

from schemas import Codec
from streams.central.kafka_loop import consumer_config
from streams.central.run import producer_config
from streams.central.worker import produce_waiting

BATCH = 1000
IDLE_S = 3.0


def run(bootstrap: str, events: str, labels: str, scores: str, group: str, worker: str) -> int:
    codec = Codec()
    consumer = Consumer(consumer_config(bootstrap, group, worker))
    producer = Producer(producer_config(bootstrap))
    consumer.subscribe([events, labels])
    last = time.monotonic()
    seen = 0
    while time.monotonic() - last < IDLE_S or not seen:
        messages = consumer.consume(BATCH, timeout=0.05)
        if not messages:
            continue
        last = time.monotonic()
        seen += len(messages)
        now = time.time() * 1000
        out = []
        for m in messages:
            if m.error() is not None:
                continue
            if m.topic() == labels:
                codec.decode(m.value(), expected="Label")
                continue
            r = codec.decode(m.value(), expected="Transaction")
            out.append(
                {
                    "event_id": r["event_id"],
                    "ts": r["ts"],
                    "scored_at": int(now),
                    "node_id": worker,
                    "model_name": "floor",
                    "model_version": 0,
                    "source": "central",
                    "score": 0.5,
                    "label": r.get("label"),
                    "latency_ms": 0.0,
                }
            )
        for record, value in zip(out, codec.encode_many("Score", out), strict=True):
            produce_waiting(producer, scores, value, record["event_id"].encode())
        producer.poll(0)
    producer.flush(60)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(run(*sys.argv[1:7]))
