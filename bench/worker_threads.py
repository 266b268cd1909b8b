"""CPU per event of one live central worker at the head of its topics, split by thread.

One worker per tree (the trees in turn, as ``central_throughput.py --trees``)
joins its group, a paced replay feeds it ``EVENTS`` events at ``RATE``
events/s, and each thread's CPU time (/proc/PID/task) from the replay's
start to the last score is divided by the events: the Python thread (the
loop) apart from librdkafka's threads (``rdk:broker*``: the consumer's
fetches and the producer's requests). Needs ``prism stack up``.

Run: ``PYTHONPATH=. python bench/worker_threads.py RATE EVENTS TREE [TREE ...]``
"""

import collections
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import central_throughput as ct  # noqa: E402  (the bench's own helpers)
from confluent_kafka.admin import AdminClient  # noqa: E402

from prism.data.replay import ReplayOptions, replay, resolve_topics  # noqa: E402
from runtime.settings import load_settings  # noqa: E402


def threads(pid):
    out = collections.Counter()
    for t in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (t / "comm").read_text().strip()
            f = (t / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = (
            "python main"
            if t.name == str(pid)
            else comm.split(":")[0]
            + ":"
            + (comm.split(":")[1].split("/")[0] if ":" in comm else "")
        )
        out[name] += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


rate, events = float(sys.argv[1]), int(sys.argv[2])
settings = load_settings()
with tempfile.TemporaryDirectory() as tmp:
    log = Path(tmp) / "l.avro"
    ct.make_log(log, events)
    for tree in sys.argv[3:]:
        os.environ["PYTHONPATH"] = tree
        ct.WORKER_TREE = tree
        s = ct.fresh(settings, None)
        admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
        group = f"bench-{uuid.uuid4().hex[:8]}"
        proc = ct.worker(s, group=group)
        ct.wait_joined(admin, group, proc)
        before = threads(proc.pid)
        replay(
            ReplayOptions(
                path=log,
                rate=rate * ct.RECORDS_PER_EVENT,
                progress=False,
                producer={"linger.ms": "1", "socket.nagle.disable": "true"},
            ),
            bootstrap=s.kafka_bootstrap,
            topics=resolve_topics("auto", s.topic),
            codec=ct.CODEC,
        )
        want = sum(ct.end_offsets(s, s.topic("transactions")))
        while sum(ct.end_offsets(s, s.topic("scores"))) < want:
            time.sleep(0.2)
        after = threads(proc.pid)
        proc.terminate()
        proc.wait(60)
        d = {k: after[k] - before.get(k, 0) for k in after}
        tot = sum(d.values())
        print(
            f"{tree}: {1e6 * tot / events:.0f} us/event total; "
            + ", ".join(
                f"{k} {1e6 * v / events:.0f}"
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])
                if v > 0
            )
            + f" | load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
