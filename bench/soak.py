"""Load soak: replay at 80 % of the central learner's measured maximum; lag and memory stay flat.

Not a test: prints figures measured in this run. Steps, all on the real broker:

1. **max**: one ``prism central run`` worker over ``--max-events`` preloaded
   fraud events; its rate = scored events / span of ``scored_at``
   (``bench/central_throughput.py``'s (a1) measurement) -- the *isolated*
   maximum. Then the *loaded* one: the soak's whole set-up (step 2) for
   ``--overload-seconds`` with the replay asking for the isolated maximum;
   what the central worker keeps up with there (input rate less the lag's
   growth) is its maximum in the soak's own company -- the replay, the broker,
   the merger and the edges share its cores. ``--max loaded`` (default) takes
   the load as a share of that one, ``--max isolated`` of the first (on a
   2-core box 80 % of it is more than the worker gets beside the others:
   measured, the lag grows);
2. **soak**: fresh topics; a central worker, the merge job and ``--edges``
   edge agents (each replaying a log of its own at ``--edge-rate``) run while
   ``prism replay --rate`` feeds ``--load`` x max events/s for ``--seconds``.
   Every second: the central worker's consumer lag (its /metrics; records of
   both topics) and every service's RSS (/proc). ``--rate`` skips step 1.

Flat means: after a warm-up (the first ``WARMUP`` of the run), the fitted
trend of the lag grows by less than half a second of input over the steady
part, and each service's RSS trend grows by less than ``RSS_GROWTH`` of its
mean. Peak RSS per service is reported.

Needs ``prism stack up`` (or PRISM_* variables). Run:
``.venv/bin/python bench/soak.py [--seconds 300] [--load 0.8] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prism.data.fraud import FraudConfig, generate_fraud
from prism.stack.ports import free_port
from prism.stack.topics import create_topics
from runtime.settings import Settings, load_settings
from schemas.eventlog import open_writer

sys.path.insert(0, str(Path(__file__).parent))
import central_throughput as ct  # noqa: E402 - the (a1) measurement, reused

RECORDS_PER_EVENT = 2  # a generated fraud log: one Transaction and one Label per event
WARMUP = 0.2  # share of the run left out of the trends
RSS_GROWTH = 0.05  # allowed RSS trend over the steady part, relative to its mean
LAG_GROWTH_S = 0.5  # allowed lag trend over the steady part, in seconds of input


def make_log(path: Path, events: int, *, seed: int, sites: int = 20) -> Path:
    with open_writer(path) as writer:
        for chunk in generate_fraud(FraudConfig(events=events, sites=sites, seed=seed)):
            writer.write_many(chunk)
    return path


def measure_max(settings: Settings, events: int) -> float:
    """Events/s of one central worker over a preloaded topic (1 worker, default batch)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = make_log(Path(tmp) / "max.avro", events, seed=11, sites=50)
        args = argparse.Namespace(batch_size=1000)
        rate = ct.batched(ct.fresh(settings, log), args, workers=1).steady
    return rate


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    rss_mb: list[float] = field(default_factory=list)

    def sample_rss(self) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        kb = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
        self.rss_mb.append(kb / 1024)


def _env(s: Settings) -> dict[str, str]:
    return dict(
        os.environ,
        PRISM_KAFKA_BOOTSTRAP=s.kafka_bootstrap or "",
        PRISM_REDIS_URL=s.redis_url.get_secret_value() if s.redis_url else "",
        PRISM_REDIS_PREFIX=s.redis_prefix,
        PRISM_TOPIC_PREFIX=s.topic_prefix,
        PRISM_STATE_DIR=str(s.state_dir),
        PRISM_LOG_LEVEL="WARNING",
    )


def _spawn(s: Settings, logs: Path, name: str, *args: str) -> subprocess.Popen:
    out = (logs / f"{name}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "prism.cli", *args], env=_env(s), stdout=out, stderr=out
    )


def _lag(port: int) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("prism_consumer_lag_records{")
    ]
    return sum(values) if values else None


def trend(values: list[float]) -> float:
    """Growth of the least-squares line over the steady part (after the warm-up), per sample."""
    steady = np.asarray(values[int(len(values) * WARMUP) :], dtype=float)
    if len(steady) < 3:
        return float("nan")
    slope = np.polyfit(np.arange(len(steady)), steady, 1)[0]
    return float(slope * len(steady))


def soak(
    settings: Settings, *, rate: float, seconds: float, edges: int, edge_rate: float, workdir: Path
) -> dict:
    """Run the services under load for ``seconds``; return lag/RSS series and verdicts."""
    s = settings.model_copy(
        update={
            "topic_prefix": f"soak.{uuid.uuid4().hex[:8]}.",
            "redis_prefix": f"soak{uuid.uuid4().hex[:6]}",
            "state_dir": workdir / "state",
        }
    )
    create_topics(s, bootstrap=s.kafka_bootstrap or "", partitions=3)
    events = int(rate * seconds)
    log = make_log(workdir / "central.avro", events, seed=3)
    central_port, merger_port = free_port(), free_port()
    services = [
        Service(
            "central",
            _spawn(
                s,
                workdir,
                "central",
                "central",
                "run",
                "--task",
                "fraud",
                "--group",
                "soak",
                "--metrics-port",
                str(central_port),
            ),
        ),
        Service(
            "merger",
            _spawn(
                s,
                workdir,
                "merger",
                "merger",
                "run",
                "--round-size",
                str(max(edges, 1)),
                "--metrics-port",
                str(merger_port),
            ),
        ),
    ]
    for i in range(edges):
        edge_log = make_log(workdir / f"edge-{i}.avro", int(edge_rate * seconds), seed=20 + i)
        services.append(
            Service(
                f"edge-{i}",
                _spawn(
                    s,
                    workdir,
                    f"edge-{i}",
                    "edge",
                    "run",
                    "--node",
                    f"soak-{i}",
                    "--source",
                    str(edge_log),
                    "--rate",
                    str(edge_rate),
                    "--state-dir",
                    str(workdir / f"e{i}"),
                ),
            )
        )
    try:
        deadline = time.monotonic() + 60
        while _lag(central_port) is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the worker has joined and reports lag
        # `prism replay --rate` counts records: each transaction is followed by its label
        replay = _spawn(
            s,
            workdir,
            "replay",
            "replay",
            str(log),
            "--no-progress",
            "--rate",
            str(rate * RECORDS_PER_EVENT),
        )
        lag: list[float] = []
        produced_at_start = _produced(s)
        start = time.monotonic()
        while time.monotonic() - start < seconds and replay.poll() is None:
            tick = time.monotonic()
            lag.append(_lag(central_port) or 0.0)
            for svc in services:
                svc.sample_rss()
                if svc.proc.poll() is not None:
                    raise SystemExit(f"{svc.name} exited ({svc.proc.returncode}) under load")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        elapsed = time.monotonic() - start
        delivered = (_produced(s) - produced_at_start) / elapsed
        try:
            replay.wait(60)
            behind = False
        except subprocess.TimeoutExpired:  # the load generator itself could not keep the rate
            replay.terminate()
            replay.wait(30)
            behind = True
    finally:
        for svc in services:
            svc.proc.terminate()
        for svc in services:
            svc.proc.wait(60)
    lag_growth = trend(lag)  # in records: the lag gauge sums transactions and labels
    steady_s = elapsed * (1 - WARMUP)
    kept_up = delivered - max(lag_growth, 0.0) / RECORDS_PER_EVENT / steady_s
    rss = {
        svc.name: {
            "peak_mb": round(max(svc.rss_mb), 1),
            "mean_mb": round(float(np.mean(svc.rss_mb)), 1),
            "growth_mb": round(trend(svc.rss_mb), 2),
        }
        for svc in services
    }
    return {
        "rate": rate,
        "delivered_events_per_s": round(delivered),  # what the replay got onto the topic
        "seconds": round(elapsed, 1),
        "events": events,
        "lag_max": max(lag),
        "lag_median": float(np.median(lag)),
        "lag_growth": round(lag_growth, 1),
        "lag_flat": bool(lag_growth < LAG_GROWTH_S * rate * RECORDS_PER_EVENT),
        # what the central worker consumed under this load: the input less the lag's growth
        "central_events_per_s": round(kept_up),
        "rss": rss,
        "rss_flat": all(r["growth_mb"] < RSS_GROWTH * r["mean_mb"] for r in rss.values()),
        "lag_series": lag,
        "replay_fell_behind": behind,
    }


def _produced(s: Settings) -> int:
    """Records on the transactions topic now (sum of the partitions' end offsets)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "soak-probe"})
    try:
        topic = s.topic("transactions")
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--load", type=float, default=0.8, help="share of the measured maximum")
    parser.add_argument("--rate", type=float, help="events/s (skips measuring the maximum)")
    parser.add_argument("--max-events", type=int, default=60_000)
    parser.add_argument(
        "--max",
        choices=("loaded", "isolated"),
        default="loaded",
        help="the maximum the load is a share of: what the worker keeps up with beside the "
        "soak's replay, merger and edges when asked for more (default) or alone over a "
        "preloaded topic",
    )
    parser.add_argument("--overload-seconds", type=float, default=90.0)
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--edge-rate", type=float, default=100.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise SystemExit("no broker/Redis: run `prism stack up` first")
    ct.PARTITIONS = 3
    isolated = loaded = None
    run = {"edges": args.edges, "edge_rate": args.edge_rate}
    if not args.rate:
        isolated = measure_max(settings, args.max_events)
        with tempfile.TemporaryDirectory(prefix="prism-overload-") as tmp:
            over = soak(
                settings,
                rate=round(isolated),
                seconds=args.overload_seconds,
                workdir=Path(tmp),
                **run,
            )
        # kept up (flat lag): the worker was not the limit, so its maximum is at least that
        loaded = over["delivered_events_per_s" if over["lag_flat"] else "central_events_per_s"]
    maximum = loaded if args.max == "loaded" else isolated
    rate = args.rate or round(args.load * maximum, 0)
    with tempfile.TemporaryDirectory(prefix="prism-soak-") as tmp:
        result = soak(settings, rate=rate, seconds=args.seconds, workdir=Path(tmp), **run)
    result["max_events_per_s"] = maximum
    result["max_isolated_events_per_s"] = isolated and round(isolated)
    result["max_loaded_events_per_s"] = loaded
    if maximum is not None:
        print(
            f"central maximum: {round(isolated)} events/s alone on a preloaded topic, "
            f"{loaded} events/s kept up with beside the soak's replay, merger and edges "
            f"when asked for {round(isolated)}; the load is {args.load:.0%} of the "
            f"{args.max} one"
        )
    print(
        f"load {rate:.0f} events/s asked, {result['delivered_events_per_s']} events/s "
        f"delivered by the replay, for {result['seconds']} s; the central worker kept up "
        f"with {result['central_events_per_s']} events/s"
    )
    print(
        f"consumer lag (records): median {result['lag_median']:.0f}, max "
        f"{result['lag_max']:.0f}, trend over the steady part {result['lag_growth']:+.0f} "
        f"-> {'flat' if result['lag_flat'] else 'GROWING'}"
    )
    for name, r in result["rss"].items():
        print(
            f"  {name:<10} peak RSS {r['peak_mb']:7.1f} MB  mean {r['mean_mb']:7.1f} MB  "
            f"trend {r['growth_mb']:+.2f} MB"
        )
    print(f"memory: {'flat' if result['rss_flat'] else 'GROWING'}")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "lag_series"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
