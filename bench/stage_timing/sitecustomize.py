"""Where an event's time goes inside a central worker: per-stage timers, off by default.

Put this directory first on a worker's PYTHONPATH and set PRISM_TIMING to a
file: the worker (``prism central run``, kafka engine) then times each stage
of its loop from its first step on -- the adaptive batch (``take``) and how
old its records already are when taken (transport: producer, broker, fetch),
decoding (``intake.route``), scoring + producing, learning, label joins,
checkpoints (flush + encode, the Redis write), commits, summaries, and each
GC collection -- and writes n / total / p50 / p99 / max / count over 10 ms per
stage (ms) as JSON when it exits (PRISM_TIMING ending in ``/``: a directory,
one file per worker). PRISM_TRACE=PREFIX instead (or too) writes
PREFIX.<pid>.json with the loop's timeline (each stage's wall-clock span and
thread-CPU seconds), every event taken (partition, offset, when its
``consume()`` returned, when its batch was cut) and every score handed to the
producer: ``bench/latency_trace.py`` joins them per event with the Kafka
timestamps. Nothing here changes what the worker does;
it wraps methods, so it costs a little time itself. Used for
docs/performance.md, "Score latency" (``bench/central_throughput.py`` sets its
workers' PYTHONPATH from ``--trees``: add this directory to each tree given).
"""

import os

if os.environ.get("PRISM_TIMING") or os.environ.get("PRISM_TRACE"):
    import atexit
    import gc
    import importlib
    import importlib.abc
    import json
    import sys
    import time

    import numpy as np

    OUT = os.environ.get("PRISM_TIMING", "")
    TRACE = os.environ.get("PRISM_TRACE", "")
    #: the loop's timeline for PRISM_TRACE: (stage, wall-clock start s, end s, detail)
    SPANS: list[tuple] = []
    #: every event taken: (partition, offset, wall-clock s the consume() call that returned
    #: it ended, s its batch was cut); every score handed to the producer: (event id, s)
    TAKEN: list[tuple] = []
    PUBLISHED: list[tuple] = []
    TIMES: dict[str, list[float]] = {}  # stage -> ms
    ON: list[int] = []  # set once the loop runs: start-up is not measured

    def rec(name: str, ms: float, cpu_s: float = -1.0) -> None:
        """A stage's wall ms; with PRISM_TRACE also its span and its thread's CPU s in it."""
        if ON:
            TIMES.setdefault(name, []).append(ms)
            if TRACE and not name.startswith(("age_", "batch_size")):
                end = time.time()
                SPANS.append((name, end - ms / 1000, end, cpu_s))

    def wrap(cls, meth: str, name: str) -> None:
        f = getattr(cls, meth, None)
        if f is None:  # another version of the worker (trees compared): not there
            return

        def timed(*a, **k):
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                return f(*a, **k)
            finally:
                rec(name, (time.perf_counter() - t) * 1000, time.thread_time() - cpu)

        setattr(cls, meth, timed)

    _gc_started: list[float] = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _gc_started[0] = time.perf_counter()
        else:
            rec(f"gc{info['generation']}", (time.perf_counter() - _gc_started[0]) * 1000)

    gc.callbacks.append(on_gc)

    def patch() -> None:
        from streams.central import (
            checkpoint,
            checkpointing,
            intake,
            kafka_loop,
            partition,
            scores,
            worker,
        )

        loop = kafka_loop.KafkaLoop
        take, run = loop._take, loop.run

        class Watched:
            """The loop's consumer, its ``consume`` calls timed (when records left librdkafka)."""

            def __init__(self, consumer):
                self._c = consumer
                self.returned: dict[int, float] = {}  # id(message) -> wall-clock s

            def consume(self, *a, **k):
                t = time.time()
                out = self._c.consume(*a, **k)
                end = time.time()
                if ON and TRACE:
                    SPANS.append(("consume", t, end, -1.0, len(out)))
                    for m in out:
                        self.returned[id(m)] = end
                return out

            def __getattr__(self, name):
                return getattr(self._c, name)

        def timed_take(self):
            t = time.perf_counter()
            if TRACE and not isinstance(self.consumer, Watched):
                self.consumer = Watched(self.consumer)
            messages = take(self)
            now = time.time() * 1000
            rec("take", (time.perf_counter() - t) * 1000)
            if TRACE and ON:
                got = self.consumer.returned
                for m in messages:
                    if m.error() is None and m.topic() == self.worker.topics.events:
                        TAKEN.append((m.partition(), m.offset(), got.get(id(m), 0.0), now / 1000))
                got.clear()
            stamps = [m.timestamp()[1] for m in messages if m.error() is None]
            if stamps:
                rec("age_oldest_at_take", now - min(stamps))
                rec("age_newest_at_take", now - max(stamps))
                rec("batch_size", len(messages))
            return messages

        def timed_run(self):
            ON.append(1)
            return run(self)

        loop._take, loop.run = timed_take, timed_run
        publish = scores.ScorePublisher.publish

        def traced_publish(self, scored):
            n = publish(self, scored)
            if TRACE and ON:
                now = time.time()
                PUBLISHED.extend((s.event_id, now) for s in scored)
            return n

        scores.ScorePublisher.publish = traced_publish
        wrap(loop, "step", "step")
        wrap(loop, "_tick", "tick")
        wrap(loop, "_commit_offsets", "commit")
        wrap(worker.CentralWorker, "process", "process")
        wrap(worker.CentralWorker, "publish_summaries", "summaries")
        wrap(intake.Intake, "route", "intake.route")
        wrap(partition.PartitionLearner, "score_events", "score_events")
        wrap(partition.PartitionLearner, "learn_scored", "learn_scored")
        wrap(partition.PartitionLearner, "take_labels", "take_labels")
        # label joins inside learn_scored (the worker joins a batch's labels there, not in
        # take_labels): its time includes this one's
        wrap(partition.PartitionLearner, "_queue_labels", "learn_scored.labels(join)")
        wrap(scores.ScorePublisher, "publish", "publish(encode+produce)")
        wrap(checkpointing.Checkpointer, "start", "checkpoint.start(flush+encode)")
        wrap(checkpointing.Checkpointer, "save", "checkpoint.save(sync)")
        wrap(checkpointing.Checkpointer, "_flush", "checkpoint.flush")
        wrap(checkpoint.CheckpointStore, "write", "checkpoint.write(redis)")
        wrap(checkpoint.CheckpointStore, "save", "checkpoint.store.save(encode+redis)")
        # the names of the code before (scored and learned in one call, commits by partition)
        wrap(partition.PartitionLearner, "take_events", "take_events(score+learn)")
        wrap(loop, "_commit", "commit(by partition)")

    class _Hook(importlib.abc.MetaPathFinder):
        """Patches once ``streams.central.run`` is imported (the worker's composition root)."""

        def find_spec(self, name, path, target=None):
            if name != "streams.central.run":
                return None
            sys.meta_path.remove(self)
            module = importlib.import_module(name)
            patch()
            return module.__spec__

    sys.meta_path.insert(0, _Hook())

    def dump() -> None:
        if TRACE:
            with open(f"{TRACE}.{os.getpid()}.json", "w") as f:
                json.dump({"spans": SPANS, "taken": TAKEN, "published": PUBLISHED}, f)
        if not OUT:
            return
        out = {}
        for k, v in list(TIMES.items()):
            a = np.array(v)
            out[k] = {
                "n": len(a),
                "total_ms": round(float(a.sum()), 1),
                "p50": round(float(np.percentile(a, 50)), 3),
                "p99": round(float(np.percentile(a, 99)), 3),
                "max": round(float(a.max()), 2),
                "over10": int((a > 10).sum()),
            }
        path = OUT  # a directory (ends in /): one file per worker, named by time and pid
        if OUT.endswith("/"):
            path = f"{OUT}{time.strftime('%H%M%S')}-{os.getpid()}.json"
        with open(path, "w") as f:
            json.dump(out, f, indent=1)

    atexit.register(dump)
