"""Central learner throughput and latency on the real broker, all in one run.

Not a test: prints figures measured in this run and their ratios.

- **(a) batched**: ``prism central run`` (confluent-kafka engine, mini-batches
  of ``--batch-size``) over a preloaded topic -> scores topic, with
  ``--workers`` processes in one consumer group (default 2: one per core of
  the 2-core reference machine; the group splits the ``--partitions``);
  **(a1)** the same with one worker;
- **(b) per-event**: one worker with ``--batch-size 1`` (score one, learn
  one, produce one), stopped after ``--per-event-seconds``;
- **(c) ceiling**: one bare confluent-kafka consumer reading the same
  transactions topic and decoding every record with the codec, no learning;
- **(d) floor**: ``bench/pipeline_floor.py`` with ``--workers`` processes in
  one group (and **(d1)** one): consume and decode the transactions *and* the
  labels, encode and produce one Score per event, with the worker's own
  consumer and producer settings -- everything a central worker must do except
  learning, joining and checkpointing. No learner can beat it, so d/c bounds
  what a/c can reach on this machine;
- ``--faust-too``: (a1) again with ``--engine faust`` (the Faust agent).

Rates of (a), (b) and (d) come from the scores themselves: the scores inside the
window where every worker of the group is scoring, divided by its length
(``scored_at`` of the last worker's first score to the first worker's last).
Process start-up, the group forming (the first member starts alone, then hands
half its partitions over) and the tail where one worker finishes alone are
outside it; the whole-run rate (first to last score of anyone) is printed too.
With one worker both are the same. Latency: one worker already running while
a paced replay feeds it, at 5,000 events/s and at 80 % of (a1), the one
worker's maximum; per event = the score's Kafka timestamp (the scores topic
set to ``LogAppendTime``: the broker's append, i.e. delivered) minus the
event's (its producer's ``CreateTime``); see :func:`latency`. Goals: (a) >= 3x
(b), (a) >= 50 % of (c), (a) >= 20,000 events/s; latency p99 <= 10 ms at
5,000 events/s and <= 50 ms at 80 % of the maximum.
Latency is counted over events produced after the run's first ``--warmup-s``
(2 s): the start is the replay's producer connecting and the worker's first
fetch, not the rate (``bench/latency_trace.py`` found every one of the
slowest 1 % in the first second of a 4 s run); the whole run's p99 and max
are printed beside. ``--latency-only [--trees BEFORE AFTER]`` runs just the
latency part, for each source tree in turn (before / after a change, back to
back; ``--light-only --trees A B A B`` alternates the light run alone).

Rounds (``--repeat``, 3 by default): (c), (d1), (a1), (d), (a) run in turn on
one preloaded topic, each ratio is taken inside its round, and the median of
the rounds is printed with its lowest and highest. Goals (#26 item 1): a1/d1
>= 80 %, a1/c >= 60 %, a1/b >= 5, a/d >= 85 %; and (a) >= 50 % of (c).

Needs a broker and Redis: ``prism stack up`` first (or PRISM_* variables).

Run: ``.venv/bin/python bench/central_throughput.py [--events 200000] [--json]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from prism.data.fraud import FraudConfig, generate_fraud
from prism.data.replay import ReplayOptions, replay, resolve_topics
from prism.stack.topics import create_topics
from runtime.settings import load_settings
from schemas import Codec
from schemas.eventlog import open_writer

CODEC = Codec()


def make_log(path: Path, events: int) -> None:
    """A fraud log: each transaction has its label, so 2 records per event (RECORDS_PER_EVENT)."""
    records = 0
    with open_writer(path) as writer:
        for chunk in generate_fraud(FraudConfig(events=events, sites=50, seed=11)):
            writer.write_many(chunk)
            records += len(chunk)
    global RECORDS_PER_EVENT
    RECORDS_PER_EVENT = records / events


def fresh(settings, log: Path | None, rate: float | None = None):
    """Topics under a new prefix, preloaded with ``log`` (unless None)."""
    s = settings.model_copy(
        update={"topic_prefix": f"bench.c{uuid.uuid4().hex[:8]}.", "partitions": PARTITIONS}
    )
    create_topics(s, bootstrap=s.kafka_bootstrap, partitions=s.partitions)
    if log is not None:
        preload(s, log, rate)
    return s


def preload(s, log: Path, rate: float | None = None) -> None:
    topics = resolve_topics("auto", s.topic)
    replay(
        ReplayOptions(path=log, rate=rate, progress=False),
        bootstrap=s.kafka_bootstrap,
        topics=topics,
        codec=CODEC,
    )


ENGINE = "kafka"  # --engine
RECORDS_PER_EVENT = 2.0  # the paced replay's rate counts labels too: set by make_log
PARTITIONS = 4  # --partitions
STARTED: list[subprocess.Popen] = []  # killed at exit, whatever happened
WORKER_TREE: str | None = None  # --trees: the source tree the workers run (None: this one)
WARMUP_S = 2.0  # --warmup-s: latency is counted over events produced after this much of a run


def worker(s, *args: str, group: str | None = None, engine: str | None = None) -> subprocess.Popen:
    env = dict(
        os.environ,
        PRISM_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
        PRISM_REDIS_URL=s.redis_url.get_secret_value(),
        PRISM_TOPIC_PREFIX=s.topic_prefix,
        PRISM_LOG_LEVEL="WARNING",
    )
    cmd = [
        sys.executable,
        "-m",
        "prism",
        "central",
        "run",
        "--task",
        "fraud",
        "--group",
        group or f"bench-{uuid.uuid4().hex[:8]}",
        "--engine",
        engine or ENGINE,
        *args,
    ]
    errors = tempfile.NamedTemporaryFile(  # noqa: SIM115 - outlives this call, as the worker
        prefix="central-bench-", suffix=".log", delete=False
    )
    # run in the tree asked for: ``-m`` puts the working directory first on sys.path,
    # ahead of PYTHONPATH, so from another checkout it would run that checkout's code
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors, cwd=WORKER_TREE)
    proc.log_path = errors.name  # type: ignore[attr-defined]
    STARTED.append(proc)
    return proc


def end_offsets(s, topic: str) -> list[int]:
    """The topic's end offsets now: a later :func:`read_all` from them reads one run's output."""
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": uuid.uuid4().hex})
    ends = [
        c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(s.partitions)
    ]
    c.close()
    return ends


def read_all(s, topic: str, since: list[int] | None = None) -> list[bytes]:
    """Every record of ``topic`` (after ``since``, per partition) up to its end now."""
    c = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    ends = [
        c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(s.partitions)
    ]
    if since is not None:
        ends = [(max(lo, start), hi) for (lo, hi), start in zip(ends, since, strict=True)]
    c.assign([TopicPartition(topic, p, lo) for p, (lo, _) in enumerate(ends)])
    want, out = sum(hi - lo for lo, hi in ends), []
    while len(out) < want:
        out.extend(m.value() for m in c.consume(10_000, timeout=1.0) if m.error() is None)
    c.close()
    return out


@dataclass(frozen=True)
class Rate:
    """Scores counted on the scores topic and the rates they show."""

    scored: int
    #: scored / (last scored_at - first scored_at), whoever scored them
    whole_run: float
    #: scores inside the window where *every* worker scores (from the last worker's
    #: first score to the first worker's last), per second of it: no solo start
    #: while the group forms, no hand-over, no solo tail
    steady: float


def score_rate(s, workers_named: str = "", since: list[int] | None = None) -> Rate:
    """Rates of the scores whose ``node_id`` starts with ``workers_named`` (one run's workers);
    ``since``: the scores topic's end offsets before the run (older scores are not read)."""
    scores = [CODEC.decode(v) for v in read_all(s, s.topic("scores"), since)]
    scores = [r for r in scores if r["node_id"].startswith(workers_named)]
    by_worker: dict[str, list[int]] = {}
    for r in scores:
        by_worker.setdefault(r["node_id"], []).append(r["scored_at"])
    if len(scores) < 2:
        return Rate(len(scores), float("nan"), float("nan"))
    at = np.array([r["scored_at"] for r in scores])
    whole = len(at) / ((at.max() - at.min()) / 1000)
    start = max(min(t) for t in by_worker.values())
    end = min(max(t) for t in by_worker.values())
    inside = int(((at >= start) & (at <= end)).sum())
    # under a second of overlap (a tiny run) says nothing steady: the whole run stands in
    steady = inside / ((end - start) / 1000) if end - start >= 1000 else whole
    return Rate(len(scores), whole, steady)


def ceiling(s, events: int) -> float:
    """Bare consume + decode of the transactions topic."""
    c = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([s.topic("transactions")])
    n, start = 0, None
    while n < events:
        for m in c.consume(10_000, timeout=1.0):
            if m.error() is None:
                start = start or time.perf_counter()
                CODEC.decode(m.value(), expected="Transaction")
                n += 1
    rate = n / (time.perf_counter() - start)
    c.close()
    return rate


def floor(s, workers: int, *, run: str = "floor") -> Rate:
    """The rates of ``workers`` pipeline-floor processes in a new group over the topics of ``s``.

    Like :func:`batched`, each run has its own group (it reads from offset 0) and
    names (``floor-{run}-{i}``), so floor and worker runs can share one preloaded topic.
    """
    since = end_offsets(s, s.topic("scores"))
    group = f"floor-{uuid.uuid4().hex[:8]}"
    script = Path(__file__).with_name("pipeline_floor.py")
    topics = [s.topic(t) for t in ("transactions", "labels", "scores")]
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), s.kafka_bootstrap, *topics, group, f"floor-{run}-{i}"]
        )
        for i in range(workers)
    ]
    STARTED.extend(procs)
    for p in procs:
        if p.wait(1800) != 0:
            raise SystemExit(f"a floor process failed (exit {p.returncode})")
    return score_rate(s, f"floor-{run}-", since)


@dataclass(frozen=True)
class Latency:
    """Event produced -> score delivered, from Kafka timestamps, at one asked rate."""

    asked: float  # events/s the paced replay asked for
    scored_rate: float  # scores/s delivered (first to last score's broker timestamp)
    p50: float
    p99: float
    scored: int
    max: float = float("nan")
    #: the same over every event, the replay's first ``WARMUP_S`` included
    p99_whole: float = float("nan")
    max_whole: float = float("nan")
    #: the worker's CPU time (user + system) from the replay's start to its last score,
    #: per event scored: per-batch costs at the head of the topics show here, whatever
    #: else the machine runs
    cpu_us_per_event: float = float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kafka_times(s, topic: str, decode_id: bool) -> dict[str, int]:
    """event id -> Kafka timestamp of every record of ``topic`` (keys: scores are keyed by id)."""
    c = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }
    )
    ends = [
        c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(s.partitions)
    ]
    c.assign([TopicPartition(topic, p, lo) for p, (lo, _) in enumerate(ends)])
    want, out = sum(hi - lo for lo, hi in ends), {}
    seen = 0
    while seen < want:
        for m in c.consume(10_000, timeout=1.0):
            if m.error() is None:
                seen += 1
                eid = CODEC.decode(m.value())["event_id"] if decode_id else m.key().decode()
                out[eid] = m.timestamp()[1]
    c.close()
    return out


def latency(settings, log: Path, rate: float, *args: str) -> Latency:
    """One worker already in its group while ``prism replay --rate`` feeds it.

    Latency per event = the score's Kafka timestamp minus the event's. The
    scores topic is switched to ``LogAppendTime``, so a score's timestamp is
    the moment the broker appended it (delivered), not when it was produced;
    the event's is its producer's ``CreateTime`` (the replay producer, with
    ``linger.ms`` 1 and no Nagle here: a source that sends each event as it
    happens; its default 20 ms linger, or a small request held back for the
    previous one's TCP acknowledgement, would sit inside the figure, before
    the worker could see the event).
    """
    s = fresh(settings, None)  # ``rate``: events/s; the replay paces records (labels too)
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})  # kept alive until done
    admin.incremental_alter_configs(
        [
            ConfigResource(
                ResourceType.TOPIC,
                s.topic("scores"),
                incremental_configs=[
                    ConfigEntry(
                        "message.timestamp.type",
                        "LogAppendTime",
                        incremental_operation=AlterConfigOpType.SET,
                    )
                ],
            )
        ]
    )[ConfigResource(ResourceType.TOPIC, s.topic("scores"))].result(30)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    proc = worker(s, *args, group=group)  # no --idle-exit: its looks at the broker stall it
    wait_joined(admin, group, proc)  # before data flows: a slow start is not latency
    cpu_before = cpu_seconds(proc.pid)
    replay(
        ReplayOptions(
            path=log,
            rate=rate * RECORDS_PER_EVENT,
            progress=False,
            producer={"linger.ms": "1", "socket.nagle.disable": "true"},
        ),
        bootstrap=s.kafka_bootstrap,
        topics=resolve_topics("auto", s.topic),
        codec=CODEC,
    )
    cpu_used = stop_when_scored(s, proc) - cpu_before
    events = kafka_times(s, s.topic("transactions"), decode_id=True)
    scores = kafka_times(s, s.topic("scores"), decode_id=False)
    both = [e for e in scores if e in events]
    lat = np.array([scores[e] - events[e] for e in both], dtype=np.float64)
    # the first seconds are the run's start, not the rate's: the replay's producer
    # connecting and the worker's first fetch (bench/latency_trace.py: in a 4 s run at
    # 5,000 events/s the slowest 1 % were all in its first second)
    made = np.array([events[e] for e in both], dtype=np.float64)
    steady = lat[made >= made.min() + WARMUP_S * 1000]
    at = np.array(sorted(scores.values()))
    span = (at[-1] - at[0]) / 1000
    return Latency(
        asked=rate,
        scored_rate=len(at) / span if span > 0 else float("nan"),
        p50=float(np.percentile(steady, 50)),
        p99=float(np.percentile(steady, 99)),
        scored=len(steady),
        max=float(steady.max()),
        p99_whole=float(np.percentile(lat, 99)),
        max_whole=float(lat.max()),
        cpu_us_per_event=1e6 * cpu_used / len(scores) if scores else float("nan"),
    )


def wait_joined(admin: AdminClient, group: str, proc: subprocess.Popen, limit_s=120.0) -> None:
    """Until the worker holds its partitions (a loaded machine may take far more than 6 s
    to import and join: the replay then went to a backlog, measured as seconds of latency)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            (described,) = admin.describe_consumer_groups([group]).values()
            members = described.result(10).members
        except Exception:  # not known to the coordinator yet
            members = []
        if any(m.assignment and m.assignment.topic_partitions for m in members):
            time.sleep(1.0)  # its checkpoint restore (none: fresh topics) and first fetch
            return
        time.sleep(0.25)
    raise RuntimeError(f"the worker did not join group {group} in {limit_s:.0f} s")


def stop_when_scored(s, proc: subprocess.Popen, limit_s: float = 600.0) -> float:
    """SIGTERM the worker once every event has its score (or after ``limit_s``); returns
    its CPU seconds used until then (not its shutdown's).

    Not ``--idle-exit``: a worker asked to exit when idle looks up every
    partition's end offset each half second without records, one broker round
    trip per partition, each queued behind the consumer's fetch long-poll
    (``fetch.wait.max.ms``, 500 ms): measured, a look took 4 s, and a replay
    starting during one found the loop stalled (docs/performance.md, "Score
    latency"). A production worker makes no such looks.
    """
    want = sum(end_offsets(s, s.topic("transactions")))
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(end_offsets(s, s.topic("scores"))) >= want:
            break
        time.sleep(0.5)
    used = cpu_seconds(proc.pid)
    proc.terminate()
    proc.wait(120)
    return used


def latency_runs(settings, args, log: Path, small: Path) -> list[dict]:
    """For each tree (``--trees``, in turn): its one-worker maximum, then its latency at
    5,000 events/s and at 80 % of that maximum."""
    global WORKER_TREE
    out = []
    for tree in args.trees or [""]:
        if tree:  # the worker processes run this tree's code (its last PYTHONPATH entry)
            os.environ["PYTHONPATH"] = tree
            WORKER_TREE = tree.split(os.pathsep)[-1]
        load = os.getloadavg()[0]
        runs = [("light", latency(settings, small, args.light_rate))]
        most = float("nan")
        if not args.light_only:
            shared = fresh(settings, log)
            most = batched(shared, args, 1, run=f"max{len(out)}").steady
            runs.append(("at_80pct", latency(settings, log, round(0.8 * most))))
        row = {"tree": tree or "this", "max_events_per_s": round(most) if most == most else None}
        for name, run in runs:
            row[name] = {
                "asked": run.asked,
                "scored_per_s": round(run.scored_rate),
                "p50_ms": round(run.p50, 1),
                "p99_ms": round(run.p99, 1),
                "max_ms": round(run.max, 1),
                "scored": run.scored,
                "whole_run_p99_ms": round(run.p99_whole, 1),
                "whole_run_max_ms": round(run.max_whole, 1),
                "cpu_us_per_event": round(run.cpu_us_per_event, 1),
            }
        row["loadavg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        out.append(row)
        print(
            f"[{row['tree']}] load {row['loadavg_1m']}; max (1 worker, preloaded) {most:,.0f}/s; "
            + "; ".join(
                f"asked {r.asked:,.0f}/s: scored {r.scored_rate:,.0f}/s, "
                f"p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms, max {r.max:.1f} ms, "
                f"worker CPU {r.cpu_us_per_event:.0f} us/event "
                f"(whole run, first {WARMUP_S:g} s too: p99 {r.p99_whole:.1f}, "
                f"max {r.max_whole:.1f})"
                for _, r in runs
            ),
            flush=True,
        )
    return out


def batched(s, args, workers: int, engine: str | None = None, *, run: str = "a") -> Rate:
    """The rates of ``workers`` processes in a new group over the preloaded topics of ``s``.

    Each run has its own group (so its own checkpoints: it starts from offset 0)
    and worker ids ``bench-{run}-{i}``, so runs can share one preloaded topic.
    """
    since = end_offsets(s, s.topic("scores"))
    group = f"bench-{uuid.uuid4().hex[:8]}"
    procs = [
        worker(
            s,
            "--batch-size",
            str(args.batch_size),
            "--worker-id",
            f"bench-{run}-{i}",
            "--idle-exit",
            "3",
            group=group,
            engine=engine,
        )
        for i in range(workers)
    ]
    for p in procs:
        if p.wait(1800) != 0:
            tail = Path(p.log_path).read_text(errors="replace")[-3000:]
            raise SystemExit(f"a worker failed (exit {p.returncode}); its log ends:\n{tail}")
    return score_rate(s, f"bench-{run}-", since)


def spread(values: list[float]) -> str:
    """``median (min-max)`` of ratios, as percentages."""
    return f"{np.median(values):.1%} ({min(values):.1%}-{max(values):.1%})"


@dataclass(frozen=True)
class Round:
    """One round of alternating runs on the shared topic: c, d1, a1, d, a in turn."""

    c: float  # the bare consumer (consume + decode the transactions)
    d1: Rate  # the pipeline floor, one process
    a1: Rate  # one worker
    d: Rate  # the floor, --workers processes
    a: Rate  # --workers workers

    def ratios(self) -> dict[str, float]:
        return {
            "one_worker_over_floor": self.a1.steady / self.d1.steady,
            "one_worker_over_ceiling": self.a1.steady / self.c,
            "batched_over_floor": self.a.steady / self.d.steady,
            "batched_over_ceiling": self.a.steady / self.c,
        }


#: (ratio, goal, what): the #26 item 1 targets, each a median over the rounds
GOALS = [
    ("one_worker_over_floor", 0.80, "a1/d1 >= 80 %"),
    ("one_worker_over_ceiling", 0.60, "a1/c >= 60 %"),
    ("batched_over_floor", 0.85, "a/d >= 85 %"),
    ("batched_over_ceiling", 0.50, "a/c >= 50 %"),
]


def main() -> int:
    global ENGINE, PARTITIONS, WARMUP_S
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes for (a)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--per-event-seconds", type=float, default=30.0)
    parser.add_argument("--latency-events", type=int, default=50_000)
    parser.add_argument("--engine", choices=("kafka", "faust"), default="kafka")
    parser.add_argument(
        "--faust-too",
        action="store_true",
        help="also time (a1) with --engine faust (the Faust agent) for comparison",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of (c), (d1), (a1), (d), (a) in turn; medians of the rounds are reported",
    )
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the latency runs: one worker's maximum, then p50/p99 at 5,000 events/s "
        "and at 80 %% of that maximum",
    )
    parser.add_argument(
        "--trees",
        nargs="*",
        help="with --latency-only: source trees whose workers run in turn (PYTHONPATH), "
        "e.g. the code before and after a change, back to back",
    )
    parser.add_argument(
        "--light-rate",
        type=float,
        default=5000.0,
        help="events/s of the light latency run (goal: p99 <= 10 ms at 5,000)",
    )
    parser.add_argument(
        "--light-only",
        action="store_true",
        help="with --latency-only: only the light run per tree (no maximum, no 80 %% run); "
        "--trees A B A B alternates",
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=WARMUP_S,
        help="latency counts events produced after this many seconds of each run "
        "(the whole run's p99 and max are printed beside)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ENGINE, PARTITIONS, WARMUP_S = args.engine, args.partitions, args.warmup_s
    settings = load_settings()
    w = args.workers
    with tempfile.TemporaryDirectory() as tmp:
        log, small = Path(tmp) / "fraud.avro", Path(tmp) / "latency.avro"
        make_log(log, args.events)
        make_log(small, args.latency_events)
        if args.latency_only:
            rows = latency_runs(settings, args, log, small)
            if args.json:
                print(json.dumps(rows))
            return 0

        # every run of a round reads one preloaded topic, in turn: this machine's speed
        # drifts by a third within minutes, and a ratio of two figures taken far apart
        # says little; each ratio is taken inside one round, then the median of the rounds
        shared = fresh(settings, log)
        rounds: list[Round] = []
        for k in range(args.repeat):
            c_k = ceiling(shared, args.events)
            d1_k = floor(shared, 1, run=f"one{k}")
            a1_k = batched(shared, args, 1, run=f"one{k}")
            d_k = floor(shared, w, run=f"pair{k}")
            a_k = batched(shared, args, w, run=f"pair{k}")
            rounds.append(Round(c_k, d1_k, a1_k, d_k, a_k))
            r = rounds[-1].ratios()
            print(
                f"round {k + 1}: (c) {c_k:,.0f}/s  (d1) {d1_k.steady:,.0f}/s  "
                f"(a1) {a1_k.steady:,.0f}/s  (d) {d_k.steady:,.0f}/s  (a) {a_k.steady:,.0f}/s  "
                f"a1/d1 {r['one_worker_over_floor']:.1%}  a1/c {r['one_worker_over_ceiling']:.1%}  "
                f"a/d {r['batched_over_floor']:.1%}  a/c {r['batched_over_ceiling']:.1%}",
                flush=True,
            )

        def med(field: str) -> float:
            return float(np.median([getattr(rd, field).steady for rd in rounds]))

        c_rate = float(np.median([rd.c for rd in rounds]))
        a_rate, a1_rate, d_rate, d1_rate = med("a"), med("a1"), med("d"), med("d1")
        a = min((rd.a for rd in rounds), key=lambda run: abs(run.steady - a_rate))
        ratios = {key: [rd.ratios()[key] for rd in rounds] for key, _, _ in GOALS}
        f_rate = (
            batched(shared, args, 1, engine="faust", run="faust").steady if args.faust_too else None
        )

        s = fresh(settings, log)
        proc = worker(s, "--batch-size", "1")
        time.sleep(args.per_event_seconds)
        proc.kill()  # a rate, not a clean stop: scores already delivered are what counts
        proc.wait(60)
        b = score_rate(s)
        b_rate = b.steady

        light = latency(settings, small, args.light_rate)
        heavy = latency(settings, log, round(0.8 * a1_rate))
    result = {
        "events": args.events,
        "engine": args.engine,
        "workers": args.workers,
        "partitions": args.partitions,
        "rates": "steady: while every worker of the group scores (see score_rate)",
        "batched_events_per_s": round(a_rate),
        "batched_whole_run_events_per_s": round(a.whole_run),
        "batched_scored": a.scored,
        "batched_one_worker_events_per_s": round(a1_rate),
        "per_event_events_per_s": round(b_rate),
        "per_event_scored": b.scored,
        "ceiling_events_per_s": round(c_rate),
        "floor_events_per_s": round(d_rate),
        "floor_one_worker_events_per_s": round(d1_rate),
        "batched_over_per_event": round(a_rate / b_rate, 2),
        "one_worker_batched_over_per_event": round(a1_rate / b_rate, 2),
        **{key: round(float(np.median(values)), 3) for key, values in ratios.items()},
        "spreads": {key: [round(min(v), 3), round(max(v), 3)] for key, v in ratios.items()},
        "rounds": [
            {
                "ceiling": round(rd.c),
                "floor_one": round(rd.d1.steady),
                "one_worker": round(rd.a1.steady),
                "floor": round(rd.d.steady),
                "batched": round(rd.a.steady),
                **{key: round(v, 3) for key, v in rd.ratios().items()},
            }
            for rd in rounds
        ],
        "faust_one_worker_events_per_s": None if f_rate is None else round(f_rate),
        "latency": [
            {
                "asked_events_per_s": run.asked,
                "scored_events_per_s": round(run.scored_rate),
                "p50_ms": round(run.p50, 1),
                "p99_ms": round(run.p99, 1),
                "max_ms": round(run.max, 1),
                "whole_run_p99_ms": round(run.p99_whole, 1),
            }
            for run in (light, heavy)
        ],
    }
    n = len(rounds)
    print(f"medians of {n} rounds (c, d1, a1, d, a in turn on one topic); rates while every")
    print("worker of a group scores; ratios: median (lowest-highest) of the rounds' own ratios")
    print(f"(a)  batched, {w} workers {a_rate:>10,.0f} events/s  (whole run {a.whole_run:,.0f})")
    print(f"(a1) batched, 1 worker  {a1_rate:>10,.0f} events/s  (batch {args.batch_size})")
    if f_rate is not None:
        print(f"     Faust engine, 1 worker {f_rate:>7,.0f} events/s")
    print(f"(b)  per-event, 1 worker {b_rate:>10,.0f} events/s  ({b.scored} scored)")
    print(f"(c)  ceiling, 1 consumer {c_rate:>10,.0f} events/s  (bare consume + codec decode)")
    print(
        f"(d)  floor, {w} workers   {d_rate:>10,.0f} events/s  (consume + decode both topics "
        "+ produce a Score, no learning)"
    )
    print(f"(d1) floor, 1 worker    {d1_rate:>10,.0f} events/s")
    for key, goal, what in GOALS:
        met = "met" if np.median(ratios[key]) >= goal else "MISSED"
        print(f"{what:<16} {spread(ratios[key])}: {met}")
    per_event = a1_rate / b_rate
    print(
        f"a1/b >= 5        {per_event:.2f} (a/b {a_rate / b_rate:.2f}): "
        f"{'met' if per_event >= 5 else 'MISSED'}"
    )
    for name, run in ((f"{args.light_rate:,.0f} events/s", light), ("80 % of (a1)", heavy)):
        print(
            f"latency at {name} (1 worker, asked {run.asked:,.0f}/s, scored "
            f"{run.scored_rate:,.0f}/s): p50 {run.p50:.1f} ms  p99 {run.p99:.1f} ms  max "
            f"{run.max:.1f} ms after the first {WARMUP_S:g} s; whole run p99 "
            f"{run.p99_whole:.1f} ms (event produced -> score delivered; goals p99 <= 10 / "
            "<= 50 ms)"
        )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for proc in STARTED:
            if proc.poll() is None:
                proc.kill()
