"""Merge job throughput and registry query latency on the real broker and Redis.

Not a test: prints figures measured in this run.

- **summaries merged/s end to end**: ``--nodes`` nodes (default 1,000) each send
  ``--rounds`` WeightSummaries of a 30-feature ``fraud-linear`` model into
  ``model-updates`` (preloaded); ``prism merger run --round-size NODES``
  merges them (FedAvg, screening off) and publishes each round to
  ``global-model`` and Redis. Rate = summaries of rounds 2..R divided by the
  span between the ``created_at`` of global versions 1 and R (start-up, group
  join and the first round's wait are not counted). Goal >= 5,000/s.
- **get_model latency**: ``RegistryClient.get_model`` of the merged model,
  ``--queries`` times, through the read-only query user; p50/p99. Goal p99 < 5 ms.

Needs ``prism stack up`` first (or PRISM_* variables).

Run: ``.venv/bin/python bench/merger_throughput.py [--nodes 1000] [--rounds 8] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

import numpy as np
from confluent_kafka import Producer

from models.serialization import weight_summary_record
from models.specs import get_spec
from prism.stack.topics import create_topics
from runtime.model_registry import RegistryClient, RegistryKeys
from runtime.settings import load_settings
from schemas import Codec

CODEC = Codec()
SPEC = get_spec("fraud-linear")
FEATURES = [f"v{i:02d}" for i in range(30)]


def node_summaries(nodes: int, events: int, seed: int = 7) -> list:
    """One learned 30-feature model per node (through the compiled batch path)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(nodes):
        X = rng.normal(size=(events, 30))
        y = X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=events) > 1.5
        model = SPEC.new_model()
        SPEC.learn_many(model, X, list(y), features=FEATURES)
        out.append(
            SPEC.summarize(model).with_provenance(
                node_id=f"node-{i:04d}", sequence=0, base_version=0
            )
        )
    return out


def preload(settings, topic: str, summaries: list, rounds: int) -> int:
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 20,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )
    sent = 0
    for r in range(1, rounds + 1):
        for s in summaries:
            record = weight_summary_record(
                s.with_provenance(node_id=s.node_id, sequence=r, base_version=0),
                tier="edge",
                created_at_ms=int(time.time() * 1000),
            )
            while True:
                try:
                    producer.produce(
                        topic, CODEC.encode("WeightSummary", record), key=s.node_id.encode()
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            sent += 1
    assert producer.flush(60) == 0
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--events-per-node", type=int, default=50)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = load_settings()
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    s = base.model_copy(
        update={"topic_prefix": f"bench.m{uuid.uuid4().hex[:8]}.", "redis_prefix": prefix}
    )
    create_topics(s, bootstrap=s.kafka_bootstrap, partitions=s.partitions)
    summaries = node_summaries(args.nodes, args.events_per_node)
    sent = preload(s, s.topic("model-updates"), summaries, args.rounds)
    print(f"preloaded {sent} summaries ({args.nodes} nodes x {args.rounds} rounds)", flush=True)

    env = dict(
        os.environ,
        PRISM_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
        PRISM_REDIS_URL=s.redis_url.get_secret_value(),
        PRISM_TOPIC_PREFIX=s.topic_prefix,
        PRISM_REDIS_PREFIX=prefix,
        PRISM_LOG_LEVEL="WARNING",
    )
    cmd = [
        sys.executable,
        "-m",
        "prism",
        "merger",
        "run",
        "--round-size",
        str(args.nodes),
        "--round-timeout",
        "600",
        "--idle-exit",
        "3",
        "--group",
        f"bench-{prefix}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"merger failed:\n{proc.stderr[-3000:]}")

    query_url = (s.redis_query_url or s.redis_url).get_secret_value()
    client = RegistryClient(query_url, keys=RegistryKeys(prefix))
    history = client.history("fraud-linear")
    versions = sorted((h["version"], h["created_at"]) for h in history)
    assert [v for v, _ in versions] == list(range(1, args.rounds + 1)), versions
    span_s = (versions[-1][1] - versions[0][1]) / 1000
    rate = (args.rounds - 1) * args.nodes / span_s
    latencies = []
    for _ in range(args.queries):
        t = time.perf_counter()
        client.get_model("fraud-linear")
        latencies.append((time.perf_counter() - t) * 1000)
    p50, p99 = np.percentile(latencies, [50, 99])
    size = len(
        CODEC.encode(
            "WeightSummary", weight_summary_record(summaries[0], tier="edge", created_at_ms=0)
        )
    )
    result = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "features": 30,
        "summary_bytes": size,
        "summaries_per_s": round(rate),
        "get_model_p50_ms": round(float(p50), 3),
        "get_model_p99_ms": round(float(p99), 3),
    }
    print(
        f"merged {rate:,.0f} summaries/s end to end (goal >= 5,000); "
        f"{args.nodes} nodes, 30 features, {size} B per summary"
    )
    print(f"get_model p50 {p50:.3f} ms  p99 {p99:.3f} ms (goal p99 < 5 ms)")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
