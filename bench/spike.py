"""MISSION.md's scenario C: a fraud stream at the centre's maximum, then doubled for a minute.

Not a test: prints figures measured in this run, on the real broker, and draws
them (PNG). What it shows is where the central pipeline falls behind when the
load doubles, and that the edges, which score locally, do not.

The set-up is bench/soak.py's (reused): one ``prism central run`` worker, the
merge job and ``--edges`` edge agents (each replaying a log of its own at
``--edge-rate``). ``prism replay --rate R`` feeds the central topic for the
whole run (``--before`` + ``--spike`` + ``--after`` seconds); a second replay
at the same rate joins for the ``--spike`` seconds, doubling the input. R is
the worker's maximum measured alone over a preloaded topic (soak.py's
*isolated* maximum) unless ``--rate`` gives it.

Per second of the run (by ``scored_at``):

- **central score latency** p50 / p99: each Score's ``latency_ms`` (time
  scored minus the Kafka timestamp the replay producer stamped on the event);
- **central lag**: the worker's consumer lag in records (its /metrics, both
  topics), sampled every second;
- **edge score latency** p99: the edges' Scores' ``latency_ms``, the time of
  one local ``score`` call (an edge's events never wait on a broker).

Printed per phase (before / spike / after): the centre's p50 and p99 and its
largest lag, and the edges' p99 (goal < 1 ms through the spike).

Needs ``prism stack up`` (or PRISM_* variables). Run:
``.venv/bin/python bench/spike.py [--before 60 --spike 60 --after 60] [--png spike.png] [--json]``
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from prism.stack.ports import free_port
from prism.stack.topics import create_topics
from runtime.settings import Settings, load_settings
from schemas import Codec

sys.path.insert(0, str(Path(__file__).parent))
import soak  # noqa: E402 - the soak's services, replay and lag probe, reused

CODEC = Codec()
PHASES = ("before", "spike", "after")


def read_scores(s: Settings) -> list[dict]:
    """Every Score on the run's scores topic, decoded."""
    topic = s.topic("scores")
    c = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions]
        c.assign(
            [TopicPartition(topic, p, lo) for p, (lo, _) in zip(partitions, ends, strict=True)]
        )
        want, out = sum(hi - lo for lo, hi in ends), []
        while len(out) < want:
            out.extend(m.value() for m in c.consume(10_000, timeout=1.0) if m.error() is None)
    finally:
        c.close()
    return [CODEC.decode(v, expected="Score") for v in out]


def per_second(scores: list[dict], start_ms: int) -> dict[int, list[float]]:
    """``latency_ms`` of the scores grouped by the run second they were scored in."""
    out: dict[int, list[float]] = defaultdict(list)
    for sc in scores:
        out[(sc["scored_at"] - start_ms) // 1000].append(sc["latency_ms"])
    return out


def phase_of(second: float, before: float, spike: float) -> str:
    return "before" if second < before else "spike" if second < before + spike else "after"


def run(
    s: Settings,
    *,
    rate: float,
    before: float,
    spike: float,
    after: float,
    edges: int,
    edge_rate: float,
    workdir: Path,
) -> dict:
    """The services under the two-step load; per-second series and per-phase figures."""
    s = s.model_copy(
        update={
            "topic_prefix": f"spike.{uuid.uuid4().hex[:8]}.",
            "redis_prefix": f"spike{uuid.uuid4().hex[:6]}",
            "state_dir": workdir / "state",
        }
    )
    create_topics(s, bootstrap=s.kafka_bootstrap or "", partitions=3)
    seconds = before + spike + after
    base_log = soak.make_log(workdir / "base.avro", int(rate * seconds), seed=3)
    extra_log = soak.make_log(workdir / "extra.avro", int(rate * spike), seed=4)
    port = free_port()
    services = [
        soak._spawn(
            s,
            workdir,
            "central",
            "central",
            "run",
            "--task",
            "fraud",
            "--group",
            "spike",
            "--metrics-port",
            str(port),
        ),
        soak._spawn(s, workdir, "merger", "merger", "run", "--round-size", str(max(edges, 1))),
    ]
    for i in range(edges):
        log = soak.make_log(workdir / f"edge-{i}.avro", int(edge_rate * seconds), seed=20 + i)
        services.append(
            soak._spawn(
                s,
                workdir,
                f"edge-{i}",
                "edge",
                "run",
                "--node",
                f"spike-{i}",
                "--source",
                str(log),
                "--rate",
                str(edge_rate),
                "--state-dir",
                str(workdir / f"e{i}"),
            )
        )
    replays = []
    lag: list[tuple[float, float]] = []
    try:
        deadline = time.monotonic() + 60
        while soak._lag(port) is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the worker has joined and reports lag
        records_per_s = str(rate * soak.RECORDS_PER_EVENT)  # replay counts records
        start_ms = int(time.time() * 1000)
        start = time.monotonic()
        replays.append(
            soak._spawn(
                s,
                workdir,
                "replay-base",
                "replay",
                str(base_log),
                "--no-progress",
                "--rate",
                records_per_s,
            )
        )
        while (elapsed := time.monotonic() - start) < seconds + 30:
            if not replays[1:] and elapsed >= before:
                replays.append(
                    soak._spawn(
                        s,
                        workdir,
                        "replay-spike",
                        "replay",
                        str(extra_log),
                        "--no-progress",
                        "--rate",
                        records_per_s,
                    )
                )
            lag.append((elapsed, soak._lag(port) or 0.0))
            if (
                elapsed > seconds
                and lag[-1][1] == 0.0
                and all(r.poll() is not None for r in replays)
            ):
                break  # drained
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start - elapsed)))
    finally:
        for p in [*replays, *services]:
            p.terminate()
        for p in [*replays, *services]:
            p.wait(60)
    scores = read_scores(s)
    central = per_second([x for x in scores if not x["node_id"].startswith("spike-")], start_ms)
    edge = per_second([x for x in scores if x["node_id"].startswith("spike-")], start_ms)
    series = [
        {
            "second": t,
            "phase": phase_of(t, before, spike),
            "central_scored": len(central.get(t, [])),
            "central_p50_ms": _pct(central.get(t), 50),
            "central_p99_ms": _pct(central.get(t), 99),
            "edge_p99_ms": _pct(edge.get(t), 99),
        }
        for t in range(0, int(max([*central, *edge, 0])) + 1)
    ]
    phases = {}
    for name in PHASES:
        c = [v for t, vs in central.items() if phase_of(t, before, spike) == name for v in vs]
        e = [v for t, vs in edge.items() if phase_of(t, before, spike) == name for v in vs]
        lags = [v for t, v in lag if phase_of(t, before, spike) == name]
        phases[name] = {
            "central_scored": len(c),
            "central_p50_ms": _pct(c, 50),
            "central_p99_ms": _pct(c, 99),
            "central_lag_max": max(lags, default=None),
            "edge_scored": len(e),
            "edge_p99_ms": _pct(e, 99),
        }
    return {
        "rate": rate,
        "spike_rate": 2 * rate,
        "seconds": {"before": before, "spike": spike, "after": after},
        "phases": phases,
        "series": series,
        "lag": [{"second": round(t, 1), "records": v} for t, v in lag],
    }


def _pct(values: list[float] | None, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    t = [r["second"] for r in result["series"]]
    fig, (lat, lag, edge) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    lat.plot(t, [r["central_p50_ms"] for r in result["series"]], label="p50")
    lat.plot(t, [r["central_p99_ms"] for r in result["series"]], label="p99")
    lat.set_yscale("log")
    lat.set_ylabel("central score\nlatency (ms)")
    lat.legend()
    lag.plot([x["second"] for x in result["lag"]], [x["records"] for x in result["lag"]])
    lag.set_ylabel("central lag\n(records)")
    edge.plot(t, [r["edge_p99_ms"] for r in result["series"]], label="edge p99")
    edge.axhline(1.0, linestyle="--", color="grey", label="1 ms")
    edge.set_ylabel("edge score\nlatency (ms)")
    edge.set_xlabel("seconds")
    edge.legend()
    b, sp = result["seconds"]["before"], result["seconds"]["spike"]
    for ax in (lat, lag, edge):
        ax.axvspan(b, b + sp, color="orange", alpha=0.15)
    fig.suptitle(f"fraud stream at {result['rate']:.0f} events/s, doubled for {sp:.0f} s (shaded)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, help="events/s before the spike (default: measured)")
    parser.add_argument("--max-events", type=int, default=60_000)
    parser.add_argument("--before", type=float, default=60.0)
    parser.add_argument("--spike", type=float, default=60.0)
    parser.add_argument("--after", type=float, default=60.0)
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--edge-rate", type=float, default=100.0)
    parser.add_argument("--png", type=Path, default=Path("spike.png"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = load_settings()
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise SystemExit("no broker/Redis: run `prism stack up` first")
    soak.ct.PARTITIONS = 3
    rate = args.rate or round(soak.measure_max(settings, args.max_events))
    with tempfile.TemporaryDirectory(prefix="prism-spike-") as tmp:
        result = run(
            settings,
            rate=rate,
            before=args.before,
            spike=args.spike,
            after=args.after,
            edges=args.edges,
            edge_rate=args.edge_rate,
            workdir=Path(tmp),
        )
    plot(result, args.png)
    print(f"central input {rate:.0f} events/s, {2 * rate:.0f} during the spike; plot: {args.png}")
    for name, p in result["phases"].items():
        print(
            f"  {name:<6} central p50 {p['central_p50_ms']} ms  p99 {p['central_p99_ms']} ms  "
            f"max lag {p['central_lag_max']} records ({p['central_scored']} scored) | "
            f"edges p99 {p['edge_p99_ms']} ms ({p['edge_scored']} scored; goal < 1 ms)"
        )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k not in ("series", "lag")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
