"""Load soak: replay at 80 % of the central learner's sustained maximum; lag and memory stay flat.

Not a test: prints figures measured in this run. Steps, all on the real broker:

1. **max**: one ``prism central run`` worker over ``--max-events`` preloaded
   fraud events; its rate = scored events / span of ``scored_at``
   (``bench/central_throughput.py``'s (a1) measurement) -- the *isolated*
   maximum, only the rate asked of the next run. Then the *sustained* one:
   the soak's whole set-up (step 2) for ``--overload-seconds`` (5 min) with
   the replay asking for the isolated maximum; the events the central worker
   scored per second over the run's *last half* (its events counter) is its
   maximum in the soak's own company -- the replay, the broker, the merger
   and the edges share its cores. Not the first 90 s, and not "input less the
   lag's growth": both over-stated what a 5-minute run then kept up with
   (docs/performance.md, "Soak runs");
2. **soak**: fresh topics; a central worker, the merge job and ``--edges``
   edge agents (each replaying a log of its own at ``--edge-rate``) run while
   ``prism replay --rate`` feeds ``--load`` x the sustained maximum for
   ``--minutes``. Every second: the central worker's consumer lag and scored
   events (its /metrics), every service's RSS and CPU time (/proc), the
   broker's and Redis's CPU time (``prism stack up``'s pid files) and the load
   average. ``--rate`` skips step 1.

Flat means: after a warm-up (the first ``WARMUP`` of the run), the fitted
trend of the lag grows by less than half a second of input over the steady
part, and each service's RSS trend grows by less than ``RSS_GROWTH`` of its
mean. Printed: the lag and RSS slopes, peak RSS, and per window of the steady
part the scored rate, each process's CPU share and the worker's CPU time per
event -- which does not depend on what else runs, so a worker whose work per
event grows with time or state is told apart from one that got less CPU.

Needs ``prism stack up`` (or PRISM_* variables). Run:
``.venv/bin/python bench/soak.py [--minutes 30] [--load 0.8] [--log FRAUD.avro] [--json]``
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
OVERLOAD_S = 300.0  # the overload run: its last half is the catch-up maximum
PROBE_S = 120.0  # each probe at the head
PROBE_SHARES = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)  # of the catch-up maximum, highest first
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


TICK_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (/proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK_S  # utime, stime


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    rss_mb: list[float] = field(default_factory=list)
    #: CPU seconds used so far, sampled with rss_mb
    cpu_s: list[float] = field(default_factory=list)

    def sample_rss(self) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        kb = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
        self.rss_mb.append(kb / 1024)
        self.cpu_s.append(cpu_seconds(self.proc.pid) or (self.cpu_s[-1] if self.cpu_s else 0.0))


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


def _metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return answer.read().decode()
    except OSError:
        return None


def _sum(text: str | None, prefix: str, having: str = "") -> float | None:
    """The sum of the samples whose line starts with ``prefix`` and holds ``having``."""
    if text is None:
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and having in line
    ]
    return sum(values) if values else None


def _lag(port: int) -> float | None:
    return _sum(_metrics(port), "prism_consumer_lag_records{")


def _scored(text: str | None) -> float | None:
    """Events the central worker scored so far (its events counter)."""
    return _sum(text, "prism_events_total{", 'kind="events"')


def trend(values: list[float]) -> float:
    """Growth of the least-squares line over the steady part (after the warm-up), per sample."""
    steady = np.asarray(values[int(len(values) * WARMUP) :], dtype=float)
    if len(steady) < 3:
        return float("nan")
    slope = np.polyfit(np.arange(len(steady)), steady, 1)[0]
    return float(slope * len(steady))


WINDOWS = 4  # the steady part is cut into this many windows for the per-window figures


def windows(at: list[float], scored: list[float], cpu: dict[str, list[float]]) -> list[dict]:
    """Per window of the steady part: events/s the central worker scored, and each process's
    CPU share (CPU seconds per second) -- the central one's also per event scored.

    CPU time per event does not depend on what else runs (unlike a rate on a shared
    machine): if the worker's grows from window to window, its work per event grows
    with time or state; if it stays and the rate falls, it got less of the cores.
    """
    first = int(len(at) * WARMUP)
    edges = np.linspace(first, len(at) - 1, WINDOWS + 1).round().astype(int)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi <= lo:
            continue
        span, done = at[hi] - at[lo], scored[hi] - scored[lo]
        row = {"from_s": round(at[lo]), "to_s": round(at[hi]), "events_per_s": round(done / span)}
        for name, used in cpu.items():
            if len(used) == len(at):
                row[f"{name}_cpu"] = round((used[hi] - used[lo]) / span, 3)
        if done > 0 and len(cpu.get("central", [])) == len(at):
            row["central_us_per_event"] = round(
                1e6 * (cpu["central"][hi] - cpu["central"][lo]) / done, 1
            )
        out.append(row)
    return out


def stack_pids(settings: Settings) -> dict[str, int]:
    """The local stack's broker and Redis (``prism stack up``'s pid files), if they are here."""
    out = {}
    for name in ("kafka", "redis"):
        try:
            out[name] = int((settings.state_dir / name / "pid").read_text().strip())
        except (OSError, ValueError):
            continue
    return out


def slope(at: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` per second over the steady part (after the warm-up)."""
    first = int(len(values) * WARMUP)
    x, y = np.asarray(at[first : len(values)]), np.asarray(values[first:], dtype=float)
    if len(y) < 3 or len(x) != len(y):
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def soak(
    settings: Settings,
    *,
    rate: float,
    seconds: float,
    edges: int,
    edge_rate: float,
    workdir: Path,
    log: Path | None = None,
) -> dict:
    """Run the services under load for ``seconds``; return lag/RSS series and verdicts.

    ``log``: a fraud log of at least ``rate * seconds`` events to replay (else one
    is generated: ~40 us of CPU per event, minutes for a long run)."""
    stack = stack_pids(settings)
    s = settings.model_copy(
        update={
            "topic_prefix": f"soak.{uuid.uuid4().hex[:8]}.",
            "redis_prefix": f"soak{uuid.uuid4().hex[:6]}",
            "state_dir": workdir / "state",
        }
    )
    create_topics(s, bootstrap=s.kafka_bootstrap or "", partitions=3)
    events = int(rate * seconds)
    if log is None:
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
            "--limit",
            str(events * RECORDS_PER_EVENT),
        )
        lag: list[float] = []
        at: list[float] = []  # seconds since the start, per sample
        scored: list[float] = []  # events the central worker scored so far, per sample
        stack_cpu: dict[str, list[float]] = {name: [] for name in stack}
        load: list[float] = []  # the machine's 1-minute load average, per sample
        events_lag: list[float] = []  # the events topic's share of ``lag``
        events_topic = f'topic="{s.topic("transactions")}"'
        produced_at_start = _produced(s)
        start = time.monotonic()
        while time.monotonic() - start < seconds and replay.poll() is None:
            tick = time.monotonic()
            text = _metrics(central_port)
            at.append(tick - start)
            lag.append(_sum(text, "prism_consumer_lag_records{") or 0.0)
            events_lag.append(_sum(text, "prism_consumer_lag_records{", events_topic) or 0.0)
            scored.append(_scored(text) or (scored[-1] if scored else 0.0))
            for svc in services:
                svc.sample_rss()
                if svc.proc.poll() is not None:
                    raise SystemExit(f"{svc.name} exited ({svc.proc.returncode}) under load")
            for name, pid in stack.items():
                stack_cpu[name].append(cpu_seconds(pid) or 0.0)
            load.append(os.getloadavg()[0])
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
    first, half = int(len(at) * WARMUP), len(at) // 2
    # what the central worker scored per second: over the steady part, and over the last
    # half alone -- under overload the latter is the rate it sustains, not its first burst
    kept_up = (scored[-1] - scored[first]) / (at[-1] - at[first])
    late = (scored[-1] - scored[half]) / (at[-1] - at[half])
    rss = {
        svc.name: {
            "peak_mb": round(max(svc.rss_mb), 1),
            "mean_mb": round(float(np.mean(svc.rss_mb)), 1),
            "growth_mb": round(trend(svc.rss_mb), 2),
            "slope_mb_per_min": round(slope(at, svc.rss_mb) * 60, 3),
        }
        for svc in services
    }
    cpu = {svc.name: svc.cpu_s for svc in services} | stack_cpu
    return {
        "rate": rate,
        "windows": windows(at, scored, cpu),
        "loadavg": round(float(np.mean(load)), 1),  # mean of the 1-minute load average
        "delivered_events_per_s": round(delivered),  # what the replay got onto the topic
        "seconds": round(elapsed, 1),
        "events": events,
        "lag_max": max(lag),
        "lag_median": float(np.median(lag)),
        "lag_growth": round(lag_growth, 1),
        "events_lag_growth": round(trend(events_lag), 1),  # of the transactions topic alone
        "lag_slope_per_min": round(slope(at, lag) * 60, 1),  # records/min over the steady part
        "lag_flat": bool(lag_growth < LAG_GROWTH_S * rate * RECORDS_PER_EVENT),
        # what the central worker consumed under this load: the input less the lag's growth
        "central_events_per_s": round(kept_up),
        # the older estimate, input less the lag's growth over two records per event: it
        # over-states when the labels topic is read ahead of the events (its lag stays flat)
        "central_by_lag_events_per_s": round(
            delivered - max(lag_growth, 0.0) / RECORDS_PER_EVENT / (at[-1] - at[first])
        ),
        "central_late_events_per_s": round(late),
        "rss": rss,
        "rss_flat": all(r["growth_mb"] < RSS_GROWTH * r["mean_mb"] for r in rss.values()),
        "lag_series": lag,
        # every sample, for a closer look: seconds, scored so far, lag, CPU seconds so far
        "series": {"at": at, "scored": scored, "lag": lag, "events_lag": events_lag, "cpu": cpu},
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


def print_windows(title: str, rows: list[dict]) -> None:
    print(title)
    for w in rows:
        shares = "  ".join(
            f"{k.removesuffix('_cpu')} {v:.2f}" for k, v in w.items() if k.endswith("_cpu")
        )
        print(
            f"  {w['from_s']:>5}-{w['to_s']:<5} s  central scored {w['events_per_s']:>7,}/s  "
            f"{w.get('central_us_per_event', float('nan')):6.1f} us CPU/event  "
            f"CPU (cores): {shares}"
        )


def probe_at_head(
    settings: Settings, catch_up: float, seconds: float, run: dict
) -> tuple[int | None, list[dict]]:
    """The highest of ``PROBE_SHARES`` x ``catch_up`` events/s whose lag stays flat.

    Catching up (an overload), the worker scores full batches; at the head it
    scores what is ready within its latency budget -- a few records a batch,
    and several times the CPU per event (measured: docs/performance.md, "Soak
    runs") -- so what it sustains there is less than what it catches up with.
    """
    probes = []
    for share in PROBE_SHARES:
        rate = round(share * catch_up)
        with tempfile.TemporaryDirectory(prefix="prism-probe-") as tmp:
            probe = soak(settings, rate=rate, seconds=seconds, workdir=Path(tmp), **run)
        row = {
            "rate": rate,
            "lag_flat": probe["lag_flat"],
            "lag_slope_per_min": probe["lag_slope_per_min"],
            "central_events_per_s": probe["central_events_per_s"],
            "central_us_per_event": probe["windows"][-1].get("central_us_per_event"),
            "loadavg": probe["loadavg"],
        }
        probes.append(row)
        print(
            f"probe {rate:,} events/s ({share:.0%} of catching up) for {probe['seconds']} s: lag "
            f"slope {row['lag_slope_per_min']:+,.0f} records/min "
            f"({'flat' if row['lag_flat'] else 'GROWING'}); {row['central_us_per_event']} us "
            f"CPU/event; load average {row['loadavg']}",
            flush=True,
        )
        if probe["lag_flat"]:
            return rate, probes
    return None, probes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="length of the soak (default 5 minutes)")
    length.add_argument("--minutes", type=float, help="length of the soak, in minutes")
    parser.add_argument("--load", type=float, default=0.8, help="share of the measured maximum")
    parser.add_argument("--rate", type=float, help="events/s (skips measuring the maximum)")
    parser.add_argument("--max-events", type=int, default=60_000)
    parser.add_argument(
        "--overload-seconds",
        type=float,
        default=OVERLOAD_S,
        help="length of the overload run that measures the sustained maximum (its last half)",
    )
    parser.add_argument(
        "--probe-seconds",
        type=float,
        default=PROBE_S,
        help="length of each probe at the head (rates stepping down from the catch-up one)",
    )
    parser.add_argument("--edges", type=int, default=2)
    parser.add_argument("--edge-rate", type=float, default=100.0)
    parser.add_argument(
        "--log",
        type=Path,
        help="a fraud log to replay (at least rate x seconds events; default: one is "
        "generated per run, ~40 us CPU per event -- many minutes for a 30-minute soak)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seconds = args.seconds or 60 * (args.minutes or 5)
    settings = load_settings()
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise SystemExit("no broker/Redis: run `prism stack up` first")
    run = {"edges": args.edges, "edge_rate": args.edge_rate, "log": args.log}
    sustained = isolated = catch_up = None
    probes: list[dict] = []
    if not args.rate:
        ct.PARTITIONS = 3
        isolated = round(measure_max(settings, args.max_events))
        with tempfile.TemporaryDirectory(prefix="prism-overload-") as tmp:
            over = soak(
                settings, rate=isolated, seconds=args.overload_seconds, workdir=Path(tmp), **run
            )
        catch_up = over["central_late_events_per_s"]
        print_windows(
            f"overload run: {over['delivered_events_per_s']:,} events/s delivered for "
            f"{over['seconds']} s (load average {over['loadavg']}); scored {catch_up:,}/s "
            "over its last half (catching up: full batches)",
            over["windows"],
        )
        sustained, probes = probe_at_head(settings, catch_up, args.probe_seconds, run)
        if sustained is None:
            raise SystemExit(f"no probe down to {PROBE_SHARES[-1]:.0%} kept the lag flat")
    rate = args.rate or round(args.load * sustained)
    with tempfile.TemporaryDirectory(prefix="prism-soak-") as tmp:
        result = soak(settings, rate=rate, seconds=seconds, workdir=Path(tmp), **run)
    result |= {
        "sustained_max_events_per_s": sustained,
        "catch_up_max_events_per_s": catch_up,
        "max_isolated_events_per_s": isolated,
        "probes": probes,
    }
    if sustained is not None:
        print(
            f"central maximum: {isolated:,} events/s alone on a preloaded topic (asked of the "
            f"overload run); {catch_up:,} events/s catching up (the overload's last "
            f"{args.overload_seconds / 2:.0f} s); sustained at the head: {sustained:,} "
            f"events/s (the highest probe whose lag stayed flat); the load is "
            f"{args.load:.0%} of it"
        )
    print(
        f"load {rate:,.0f} events/s asked, {result['delivered_events_per_s']:,} events/s "
        f"delivered by the replay, for {result['seconds']} s (load average "
        f"{result['loadavg']}); the central worker scored {result['central_events_per_s']:,} "
        f"events/s over the steady part, {result['central_late_events_per_s']:,} over the "
        "last half"
    )
    print_windows("windows of the steady part:", result["windows"])
    print(
        f"consumer lag (records): median {result['lag_median']:.0f}, max "
        f"{result['lag_max']:.0f}, slope {result['lag_slope_per_min']:+,.0f} records/min, "
        f"trend over the steady part {result['lag_growth']:+.0f} "
        f"(flat: < {LAG_GROWTH_S} s of input) -> {'flat' if result['lag_flat'] else 'GROWING'}"
    )
    for name, r in result["rss"].items():
        print(
            f"  {name:<10} peak RSS {r['peak_mb']:7.1f} MB  mean {r['mean_mb']:7.1f} MB  "
            f"trend {r['growth_mb']:+.2f} MB  slope {r['slope_mb_per_min']:+.3f} MB/min"
        )
    print(
        f"memory (flat: each trend < {RSS_GROWTH:.0%} of its mean): "
        f"{'flat' if result['rss_flat'] else 'GROWING'}"
    )
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k not in ("lag_series", "series")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
