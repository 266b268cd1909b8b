"""Where an event's time goes inside a central worker: per-stage timers, off by default.

Put this directory first on a worker's PYTHONPATH and set PRISM_TIMING to a
file: the worker (``prism central run``, kafka engine) then times each stage
of its loop from its first step on -- the adaptive batch (``take``) and how
old its records already are when taken (transport: producer, broker, fetch),
decoding (``intake.route``), scoring + producing, learning, label joins,
checkpoints (flush + encode, the Redis write), commits, summaries, and each
GC collection -- and writes n / total / p50 / p99 / max / count over 10 ms per
stage (ms) as JSON when it exits (PRISM_TIMING ending in ``/``: a directory,
one file per worker). Nothing here changes what the worker does;
it wraps methods, so it costs a little time itself. Used for
docs/performance.md, "Score latency" (``bench/central_throughput.py`` sets its
workers' PYTHONPATH from ``--trees``: add this directory to each tree given).
"""

import os

if os.environ.get("PRISM_TIMING"):
    import atexit
    import gc
    import importlib
    import importlib.abc
    import json
    import sys
    import time

    import numpy as np

    OUT = os.environ["PRISM_TIMING"]
    TIMES: dict[str, list[float]] = {}  # stage -> ms
    ON: list[int] = []  # set once the loop runs: start-up is not measured

    def rec(name: str, ms: float) -> None:
        if ON:
            TIMES.setdefault(name, []).append(ms)

    def wrap(cls, meth: str, name: str) -> None:
        f = getattr(cls, meth, None)
        if f is None:  # another version of the worker (trees compared): not there
            return

        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                rec(name, (time.perf_counter() - t) * 1000)

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

        def timed_take(self):
            t = time.perf_counter()
            messages = take(self)
            now = time.time() * 1000
            rec("take", (time.perf_counter() - t) * 1000)
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
        wrap(loop, "step", "step")
        wrap(loop, "_tick", "tick")
        wrap(loop, "_commit_offsets", "commit")
        wrap(worker.CentralWorker, "process", "process")
        wrap(worker.CentralWorker, "publish_summaries", "summaries")
        wrap(intake.Intake, "route", "intake.route")
        wrap(partition.PartitionLearner, "score_events", "score_events")
        wrap(partition.PartitionLearner, "learn_scored", "learn_scored")
        wrap(partition.PartitionLearner, "take_labels", "take_labels")
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
