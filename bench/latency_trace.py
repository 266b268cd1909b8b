"""Where the slowest scores' time went: one central worker, each event traced stage by stage.

``bench/central_throughput.py --latency-only`` says *how* late scores are
(p50/p99 from Kafka timestamps); this says *where* the late ones waited, per
event rather than per batch, so the answer does not hang on the machine's
load. One worker (``--trees``: each tree's in turn, alternating ``--rounds``
times) runs with ``bench/stage_timing`` on its path and ``PRISM_TRACE`` set,
while a paced replay feeds it. Per event, all on this machine's one clock:

- ``produce``: the replay's ``produce()`` call (its producer's CreateTime);
- ``append``: the broker's append of the event (the events topic set to
  ``LogAppendTime`` here, so the worker's batching sees the append time);
- ``consumed``: the worker's ``consume()`` call that handed it over returned;
- ``cut``: its batch closed (the adaptive fill wait ended);
- ``produced``: its score handed to the worker's producer;
- ``delivered``: the score's append (the scores topic on ``LogAppendTime``).

For all events and for the slowest 1 % (end to end), the share of each
step and what the worker's loop was doing (from its stage timeline) while
those events waited. ``--floor`` runs, after each tree's worker, the
latency floor instead (``bench/pipeline_floor.py ... latency``: consume,
decode, produce a Score, no model), under the same load: what the worker
adds is its latency minus the floor's. Needs a broker and Redis
(``prism stack up``).

Run: ``PYTHONPATH=. python bench/latency_trace.py [--rate 5000] [--events 50000]
[--trees A B] [--rounds 1] [--json]``
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import central_throughput as ct  # noqa: E402  (the bench's own helpers)

import prism.data.replay as replay_module  # noqa: E402
from runtime.settings import load_settings  # noqa: E402

HERE = Path(__file__).resolve().parent
STEPS = (
    ("producer -> broker", "produce", "append"),
    ("broker -> consume() returned", "append", "consumed"),
    ("batch fill wait", "consumed", "cut"),
    ("cut -> score produced", "cut", "produced"),
    ("score produced -> delivered", "produced", "delivered"),
)


class TimedProducer(Producer):
    """The replay's producer, noting each event's ``produce()`` time by partition and offset."""

    sent: dict[tuple[str, int, int], float] = {}

    def produce(self, topic, value=None, key=None, *a, on_delivery=None, **k):  # noqa: ANN001
        t = time.time()

        def noted(err, msg, t=t):  # noqa: ANN001
            if err is None:
                TimedProducer.sent[(msg.topic(), msg.partition(), msg.offset())] = t
            if on_delivery is not None:
                on_delivery(err, msg)

        return super().produce(topic, value, key, *a, on_delivery=noted, **k)


def log_append(admin: AdminClient, topics: list[str]) -> None:
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            t,
            incremental_configs=[
                ConfigEntry(
                    "message.timestamp.type",
                    "LogAppendTime",
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for t in topics
    ]
    for f in admin.incremental_alter_configs(resources).values():
        f.result(30)


def read_topic(s, topic: str, decode_id: bool) -> dict:
    """(partition, offset) -> (event id, append s) for events; event id -> append s for scores."""
    c = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap,
            "group.id": uuid.uuid4().hex,
            "enable.auto.commit": False,
        }  # fmt: skip
    )
    ends = [
        c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(s.partitions)
    ]
    c.assign([TopicPartition(topic, p, lo) for p, (lo, _) in enumerate(ends)])
    want, out, seen = sum(hi - lo for lo, hi in ends), {}, 0
    while seen < want:
        for m in c.consume(10_000, timeout=1.0):
            if m.error() is None:
                seen += 1
                ts = m.timestamp()[1] / 1000
                if decode_id:
                    out[(m.partition(), m.offset())] = (ct.CODEC.decode(m.value())["event_id"], ts)
                else:
                    out[m.key().decode()] = ts
    c.close()
    return out


def run_one(settings, log: Path, rate: float, tree: str, trace_dir: Path) -> dict:
    s = ct.fresh(settings, None)
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    log_append(admin, [s.topic("transactions"), s.topic("scores")])
    prefix = trace_dir / uuid.uuid4().hex[:8]
    group = f"trace-{uuid.uuid4().hex[:8]}"
    if tree == "floor":  # this checkout's floor, untraced
        os.environ.pop("PRISM_TRACE", None)
        os.environ["PYTHONPATH"] = str(HERE.parent)
        proc = floor_relay(s, group)
    else:
        os.environ["PRISM_TRACE"] = str(prefix)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE / "stage_timing"), tree])
        ct.WORKER_TREE = tree
        proc = ct.worker(s, group=group)
    ct.wait_joined(admin, group, proc)
    TimedProducer.sent = {}
    load = os.getloadavg()
    replay_module.Producer = TimedProducer
    try:
        replay_module.replay(
            replay_module.ReplayOptions(
                path=log,
                rate=rate * ct.RECORDS_PER_EVENT,
                progress=False,
                producer={"linger.ms": "1", "socket.nagle.disable": "true"},
            ),
            bootstrap=s.kafka_bootstrap,
            topics=replay_module.resolve_topics("auto", s.topic),
            codec=ct.CODEC,
        )
    finally:
        replay_module.Producer = Producer
    ct.stop_when_scored(s, proc)
    load_after = os.getloadavg()
    paths = glob.glob(f"{prefix}.*.json")
    trace = json.loads(Path(paths[0]).read_text()) if paths else None
    events = read_topic(s, s.topic("transactions"), decode_id=True)
    scores = read_topic(s, s.topic("scores"), decode_id=False)
    return analyse(trace, events, scores, s.topic("transactions")) | {
        "tree": tree,
        "rate": rate,
        "loadavg_1m": [round(load[0], 2), round(load_after[0], 2)],
    }


def floor_relay(s, group: str):
    """The latency floor in place of a worker (its stderr in a file, like a worker's)."""
    import subprocess

    errors = tempfile.NamedTemporaryFile(prefix="floor-", suffix=".log", delete=False)  # noqa: SIM115
    cmd = [sys.executable, str(HERE / "pipeline_floor.py"), s.kafka_bootstrap,
           s.topic("transactions"), s.topic("labels"), s.topic("scores"), group,
           "floor-latency", "latency"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors)
    ct.STARTED.append(proc)
    return proc


def analyse(trace: dict | None, events: dict, scores: dict, topic: str) -> dict:
    if trace is None:  # the floor: end to end and the way in only
        rows = [
            (TimedProducer.sent[(topic, p, o)], append, scores[eid])
            for (p, o), (eid, append) in events.items()
            if (topic, p, o) in TimedProducer.sent and eid in scores
        ]
        a = np.array(rows) * 1000
        total = a[:, 2] - a[:, 0]
        late = a[:, 0] - a[:, 0].min() >= 1000
        return {
            "events": len(a),
            "end_to_end_ms": pct(total),
            "after_first_second": {"end_to_end_ms": pct(total[late])},
            "steps_all_ms": {"producer -> broker": pct(a[:, 1] - a[:, 0])},
        }
    taken = {(p, o): (got, cut) for p, o, got, cut in trace["taken"]}
    published = {}
    for eid, t in trace["published"]:
        published.setdefault(eid, t)  # the first: a score produced twice counts once
    rows = []
    for (p, o), (eid, append) in events.items():
        sent = TimedProducer.sent.get((topic, p, o))
        if sent is None or (p, o) not in taken or eid not in published or eid not in scores:
            continue
        got, cut = taken[(p, o)]
        rows.append((sent, append, got, cut, published[eid], scores[eid]))
    a = np.array(rows) * 1000  # ms
    names = ("produce", "append", "consumed", "cut", "produced", "delivered")
    col = {n: a[:, i] for i, n in enumerate(names)}
    total = col["delivered"] - col["produce"]
    slow = total >= np.percentile(total, 99)
    out = {
        "events": len(a),
        "end_to_end_ms": pct(total),
        "steps_all_ms": {name: pct(col[b] - col[a_]) for name, a_, b in STEPS},
        "steps_p99_events_ms": {name: pct((col[b] - col[a_])[slow]) for name, a_, b in STEPS},
        "p99_events": int(slow.sum()),
    }
    # what the loop was doing while the slowest events waited between append and delivery
    spans = [sp for sp in trace["spans"] if sp[0] not in ("consume",)]
    busy: dict[str, float] = {}
    for i in np.flatnonzero(slow):
        lo, hi = col["append"][i] / 1000, col["delivered"][i] / 1000
        for name, t0, t1, *_ in spans:
            overlap = min(t1, hi) - max(t0, lo)
            if overlap > 0:
                busy[name] = busy.get(name, 0.0) + overlap * 1000
    n = max(int(slow.sum()), 1)
    out["loop_stages_overlapping_p99_events_ms_each"] = {
        k: round(v / n, 2) for k, v in sorted(busy.items(), key=lambda kv: -kv[1])[:14]
    }
    start = col["produce"].min()
    second = ((col["produce"][slow] - start) // 1000).astype(int)
    out["p99_events_by_second_of_run"] = {
        str(k): int(v) for k, v in zip(*np.unique(second, return_counts=True), strict=True)
    }
    late = col["produce"] - start >= 1000  # past the first second (connections, first fetch)
    if late.any():
        t_late = total[late]
        slow_late = late & (total >= np.percentile(t_late, 99))
        out["after_first_second"] = {
            "end_to_end_ms": pct(t_late),
            "steps_p99_events_ms": {
                name: pct((col[b] - col[a_])[slow_late]) for name, a_, b in STEPS
            },
        }
    stages: dict[str, list] = {}
    for name, t0, t1, cpu, *_ in trace["spans"]:
        stages.setdefault(name, []).append((t1 - t0, cpu))
    out["loop_stages"] = {
        name: {
            "n": len(v),
            "wall_ms_total": round(sum(w for w, _ in v) * 1000, 1),
            "cpu_ms_total": round(sum(c for _, c in v if c >= 0) * 1000, 1),
            "wall_ms_max": round(max(w for w, _ in v) * 1000, 2),
            "wall_ms_p99": round(float(np.percentile([w for w, _ in v], 99)) * 1000, 2),
        }
        for name, v in sorted(stages.items())
    }
    first = np.argsort(col["produce"])[:: max(len(a) // 400, 1)][:40]  # the run's start
    out["start_of_run"] = [
        {"at": round(float(col["produce"][i] - start), 1)}
        | {n_: round(float(col[n_][i] - col["produce"][i]), 1) for n_ in names[1:]}
        for i in first
    ]
    t0 = col["produce"].min() / 1000
    out["first_spans"] = [
        (name, round((a0 - t0) * 1000, 1), round((a1 - a0) * 1000, 2), round(cpu * 1000, 2))
        for name, a0, a1, cpu, *_ in sorted(trace["spans"], key=lambda sp: sp[1])
        if name != "consume" and a1 >= t0
    ][:40]
    worst = np.argsort(total)[-5:]
    out["worst5"] = [
        {n_: round(float(col[n_][i] - col["produce"][i]), 1) for n_ in names[1:]} for i in worst
    ]
    return out


def pct(x: np.ndarray) -> dict:
    if not len(x):
        return {}
    return {
        "p50": round(float(np.percentile(x, 50)), 2),
        "p99": round(float(np.percentile(x, 99)), 2),
        "max": round(float(x.max()), 2),
        "mean": round(float(x.mean()), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--trees", nargs="*", default=[str(HERE.parent)])
    parser.add_argument("--rounds", type=int, default=1, help="the trees in turn, this often")
    parser.add_argument(
        "--floor", action="store_true", help="after each tree, the latency floor (no model)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ct.PARTITIONS = args.partitions
    settings = load_settings()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "trace.avro"
        ct.make_log(log, args.events)
        for k in range(args.rounds):
            for tree in [t_ for tree_ in args.trees for t_ in [tree_, "floor"][: 1 + args.floor]]:
                tree = tree if tree == "floor" else str(Path(tree).resolve())
                r = run_one(settings, log, args.rate, tree, Path(tmp))
                r["round"] = k
                results.append(r)
                e2e = r["end_to_end_ms"]
                print(
                    f"[round {k}] {tree}: load {r['loadavg_1m']}, end to end p50 {e2e['p50']} "
                    f"p99 {e2e['p99']} max {e2e['max']} ms over {r['events']} events",
                    flush=True,
                )
                if not args.json:
                    print(json.dumps({k_: r[k_] for k_ in r if k_ != "tree"}, indent=1))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
