"""CPU per event of the central worker's ``process`` fed batches of a given size.

At the head of its topics a worker's batches hold a handful of records, and
whatever it pays per batch (per partition: scoring and learning set-up, the
window update, one produce run) is paid every few events. This feeds
``CentralWorker.process`` a generated fraud log (transactions and their
labels, 4 partitions) in batches of each ``--sizes`` records, with the real
producer (scores go to a fresh topic) and Redis, and prints CPU time per
event: the whole process (librdkafka's producer threads included) and the
calling thread alone (the Python work a batch does). The first tenth of the
log warms up. No consumer and no loop: ``bench/central_throughput.py
--latency-only`` measures a live worker.

Run (after ``prism stack up``; the tree to measure first on the path and as
the working directory): ``PYTHONPATH=. python bench/batch_cost.py [--events
20000] [--sizes 8,20,60,1000]``
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
import zlib

from prism.data.fraud import FraudConfig, generate_fraud
from prism.stack.topics import create_topics
from runtime.gc_tuning import tune_for_streaming
from runtime.settings import load_settings
from streams.central.config import CentralConfig
from streams.central.intake import RecordIn
from streams.central.run import build_worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--sizes", default="8,20,60,1000", help="records per batch, in turn")
    args = parser.parse_args()
    settings = load_settings()
    s = settings.model_copy(
        update={"topic_prefix": f"bench.b{uuid.uuid4().hex[:8]}.", "partitions": 4}
    )
    create_topics(s, bootstrap=s.kafka_bootstrap, partitions=4)
    out = []
    for size in (int(x) for x in args.sizes.split(",")):
        group = f"bench-{uuid.uuid4().hex[:8]}"
        worker = build_worker(s, CentralConfig(task="fraud", group=group, worker_id="w1"))
        tune_for_streaming()
        worker.assign(range(4))
        codec, topics = worker.codec, worker.topics
        offsets: dict[tuple[str, int], int] = {}
        records = []
        for chunk in generate_fraud(FraudConfig(events=args.events, sites=50, seed=11)):
            for kind, r in chunk:
                key = r["event_id"].encode()
                p = zlib.crc32(key) % 4
                topic = topics.events if kind == "Transaction" else topics.labels
                offset = offsets[topic, p] = offsets.get((topic, p), -1) + 1
                value = codec.encode(kind, r)
                records.append(RecordIn(topic, p, offset, key, value, int(time.time() * 1000)))
        warm = len(records) // 10
        for i in range(0, warm, size):
            worker.process(records[i : i + size])
        events = sum(1 for r in records[warm:] if r.topic == topics.events)
        process, thread = time.process_time(), time.thread_time()
        for i in range(warm, len(records), size):
            worker.process(records[i : i + size])
            worker.producer.poll(0)
        process, thread = time.process_time() - process, time.thread_time() - thread
        worker.producer.flush(30)
        out.append(
            f"batch {size}: {1e6 * process / events:.0f} us/event "
            f"(calling thread {1e6 * thread / events:.0f})"
        )
    print("; ".join(out), f"| load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
