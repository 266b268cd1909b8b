"""``prism compare --stack``: the same comparison through the real services.

Each architecture runs on its own topic and key prefix, as the processes a
user would run, on one-partition topics (one partition = one central model,
as the in-process centralized architecture):

- ``centralized``: ``prism replay`` of the log, ``prism central run
  --batch-size 1`` (score then learn, event by event);
- ``federated``: ``prism merger run`` + ``prism edge fleet`` (one agent per
  site, ``--blend-alpha 1``);
- ``hybrid``: merger + central learner on what the agents forward + fleet in
  ``--mode hybrid``;
- ``local``: the fleet alone (no merger, so no global model ever arrives).

Scores are read back from the scores topic (and the agents' offline files) and
graded by the same report code. The event order inside each process is the
log's; the agents replay it side by side on one clock (``--speedup``, one time
zero for all, written to ``--start-at-file`` once every agent is up, so a
process that starts late is not a site that runs late), cut by event count,
pull the newest global at each event as the simulated sites do, and stamp each
summary with its event time; the merger runs ``--event-time``, so a round opens
and fills at its updates' event time and times out on the event clock, not when
the summaries happen to arrive. Rounds then hold the same updates as the
simulation's; what remains is the global's trip through Kafka (adopted a few
events late) and, for hybrid, the central learner's timer: :data:`TOLERANCE` is
the agreement measured and tested.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from prism.compare.engine import Run, SimConfig
from prism.compare.stream import Stream
from prism.stack.topics import create_topics
from runtime.errors import StackError
from runtime.kafka_security import kafka_security
from runtime.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["TOLERANCE", "run_on_stack"]

#: |ROC AUC on the stack - ROC AUC in-process| measured (docs/compare.md); exact for
#: centralized and local; federated and hybrid merge on event time but adopt each
#: global a few events late (its trip through Kafka), and the hybrid centre sums up on a timer.
TOLERANCE = {"centralized": 1e-6, "local": 1e-6, "federated": 0.03, "hybrid": 0.03}

#: What the hybrid agents forward to the centre (a label only for a forwarded event).
RAW_TOPICS = ("transactions", "sensor-readings", "labels")

#: The agents' shared time zero is this far after the last of them is up: the time it
#: takes each to notice the file that holds it (they look every 50 ms).
START_MARGIN_S = 1.0


def run_on_stack(
    settings: Settings,
    log_path: Path,
    stream: Stream,
    config: SimConfig,
    *,
    timeout: float,
    replay_seconds: float = 30.0,
) -> dict[str, Run]:
    if not settings.kafka_bootstrap or settings.redis_url is None:
        raise StackError("--stack needs the local stack: run `prism stack up` first")
    tag = uuid.uuid4().hex[:6]
    runs = {}
    for arch in config.architectures:
        arch_settings = settings.model_copy(
            update={
                "topic_prefix": f"cmp{tag}{arch[:3]}.",
                "redis_prefix": f"cmp{tag}{arch}",
                "state_dir": settings.state_dir / "compare" / f"{tag}-{arch}",
            }
        )
        create_topics(arch_settings, bootstrap=settings.kafka_bootstrap, partitions=1)
        started = time.monotonic()
        on_stack = _ArchitectureOnStack(
            arch, arch_settings, log_path, stream, config, replay_seconds
        )
        on_stack.run(timeout)
        log.info("compare --stack %s done in %.1f s", arch, time.monotonic() - started)
        runs[arch] = _collect(arch, arch_settings, stream, config)
    return runs


class _ArchitectureOnStack:
    def __init__(
        self,
        arch: str,
        settings: Settings,
        log_path: Path,
        stream: Stream,
        config: SimConfig,
        replay_seconds: float,
    ) -> None:
        self.arch, self.settings, self.log_path = arch, settings, log_path
        self.stream, self.config = stream, config
        self.task = "fraud" if stream.record_type == "Transaction" else "iot"
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.config_replay_seconds = replay_seconds
        settings.state_dir.mkdir(parents=True, exist_ok=True)

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            PRISM_KAFKA_BOOTSTRAP=s.kafka_bootstrap or "",
            PRISM_REDIS_URL=s.redis_url.get_secret_value() if s.redis_url else "",
            PRISM_TOPIC_PREFIX=s.topic_prefix,
            PRISM_REDIS_PREFIX=s.redis_prefix,
            PRISM_STATE_DIR=str(s.state_dir),
            PRISM_LOG_LEVEL="INFO",  # _wait_assigned reads the "assigned" lines
            PYTHONUNBUFFERED="1",
        )
        return env

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        out = (self.settings.state_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "prism.cli", *args],
            env=self._env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append((name, proc))
        return proc

    def _wait(self, name: str, proc: subprocess.Popen, deadline: float) -> None:
        try:
            code = proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise StackError(
                f"compare --stack {self.arch}: {name} did not finish in time"
            ) from None
        if code != 0:
            tail = (self.settings.state_dir / f"{name}.log").read_text(errors="replace")[-1500:]
            raise StackError(f"compare --stack {self.arch}: {name} exited {code}:\n{tail}")

    def _wait_assigned(self, name: str, proc: subprocess.Popen, deadline: float) -> None:
        """Until ``name`` logs its partition assignment: the simulation's merger and centre
        are there from the first event, so the sites' replay must not start before them (a
        merger still joining its group closed its first rounds late and a CI run's federated
        stack score fell 0.086 below the simulation's)."""
        path = self.settings.state_dir / f"{name}.log"
        while "assigned " not in path.read_text(errors="replace"):
            if proc.poll() is not None:
                self._wait(name, proc, deadline)  # raises with the log's tail (or exit 0)
                raise StackError(f"compare --stack {self.arch}: {name} stopped before it joined")
            if time.monotonic() > deadline:
                raise StackError(f"compare --stack {self.arch}: {name} never got its partitions")
            time.sleep(0.1)

    def run(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        c = self.config
        try:
            if self.arch == "centralized":
                replay = self._start("replay", "replay", str(self.log_path), "--no-progress")
                self._wait("replay", replay, deadline)
                central = self._central(idle=3.0)
                self._wait("central", central, deadline)
                return
            merger = central = None
            if self.arch in ("federated", "hybrid"):
                size = c.round_size or max(1, (len(self.stream.site_names) + 1) // 2)
                merger = self._start(
                    "merger",
                    "merger",
                    "run",
                    "--strategy",
                    c.strategy,
                    "--round-size",
                    str(size),
                    "--round-timeout",
                    str(self._round_timeout_s()),
                    "--group",
                    "compare",
                    "--event-time",
                    "--speedup",
                    str(self._speedup()),
                    "--quantize",
                    c.quantize or "float64",
                    "--deltas",
                    c.deltas or "off",
                )
            if self.arch == "hybrid":
                central = self._central(idle=None)
            for name, proc in (("merger", merger), ("central", central)):
                if proc is not None:
                    self._wait_assigned(name, proc, deadline)
            alpha = {"federated": "1.0", "hybrid": str(c.blend_alpha)}.get(self.arch, "0.5")
            # local-only nodes never merge: one summary at the end, not one per cadence
            every = str(c.summary_every) if self.arch != "local" else "1000000000"
            fleet = self._start(
                "fleet",
                "edge",
                "fleet",
                "--nodes",
                str(len(self.stream.site_names)),
                "--data",
                str(self.log_path),
                "--task",
                self.task,
                "--model",
                c.spec_name,
                "--summary-every",
                every,
                "--blend-alpha",
                alpha,
                "--quantize",
                c.quantize or "float64",
                "--min-move",
                str(c.min_move),
                "--max-move",
                str(c.max_move),
                "--personal-pull",
                str(c.personal_pull),
                "--shift-global" if c.shift_global else "--no-shift-global",
                "--global-max-age",
                "1e9",
                "--drain-timeout",
                "30",
                "--speedup",
                str(self._speedup()),
                "--start-at-file",
                str(self._start_file),
                *(
                    ["--mode", "hybrid", "--forward-sample", str(c.forward_sample)]
                    if self.arch == "hybrid"
                    else []
                ),
            )
            self._start_when_up(fleet, len(self.stream.site_names), deadline)
            self._wait("fleet", fleet, deadline)
            # the fleet has delivered everything: the centre first (its last summary goes to
            # the merger), then the merger, each once it has read all there is for it
            if central is not None:
                self._stop_once_read("central", central, RAW_TOPICS, deadline)
            if merger is not None:
                self._stop_once_read("merger", merger, ("model-updates",), deadline)
        finally:
            for _name, proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)

    def _speedup(self) -> float:
        """Replay the sites side by side on the log's clock in about ``replay_seconds``."""
        span_s = float(self.stream.ts_ms.max() - self.stream.ts_ms.min()) / 1000
        return max(span_s / self.config_replay_seconds, 1e-3)

    def _round_timeout_s(self) -> float:
        """The simulation's round timeout, in event time (the merger runs ``--event-time``)."""
        span_ms = float(self.stream.ts_ms.max() - self.stream.ts_ms.min())
        return (self.config.round_timeout_ms or max(1, int(span_ms) // 100)) / 1000

    @property
    def _start_file(self) -> Path:
        return self.settings.state_dir / "start-at"

    def _start_when_up(self, fleet: subprocess.Popen, nodes: int, deadline: float) -> None:
        """Write the agents' shared time zero once every agent is up and linked.

        Each agent waits for it before its first event, so none starts behind
        the others however long a busy machine takes to start them (25-33 s
        at load 20-60 where 4 s was planned), and the merger is there first.
        """
        logs = self.settings.state_dir / "fleet"
        while True:
            up = sum(
                "edge agent running" in path.read_text(errors="replace")
                for path in logs.glob("*.log")
            )
            if up >= nodes:
                break
            if fleet.poll() is not None:
                self._wait("fleet", fleet, deadline)  # raises with the log's tail (or exit 0)
                raise StackError(f"compare --stack {self.arch}: the fleet stopped before it ran")
            if time.monotonic() > deadline:
                raise StackError(f"compare --stack {self.arch}: the agents never came up")
            time.sleep(0.1)
        part = self._start_file.with_suffix(".part")
        part.write_text(repr(time.time() + START_MARGIN_S))
        part.replace(self._start_file)  # whole or absent: an agent never reads half of it

    def _stop_once_read(
        self, name: str, proc: subprocess.Popen, topics: tuple[str, ...], deadline: float
    ) -> None:
        """SIGTERM ``name`` once its group (``compare``) has committed the end of ``topics``.

        A commit follows the stored state (merger state, central checkpoint), so
        everything there is processed and a SIGTERM (a last checkpoint and
        summary, then exit 0) loses nothing. Not ``--idle-exit``: its clock
        runs from the assignment, and agents slower to start than its limit
        (a loaded machine) would find the merger gone before their first summary.
        """
        from confluent_kafka import KafkaException

        consumer = Consumer(
            {
                **kafka_security(self.settings),
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "group.id": "compare",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        try:
            while True:
                if proc.poll() is not None:
                    self._wait(name, proc, deadline)  # raises with the log's tail (or exit 0)
                    raise StackError(f"compare --stack {self.arch}: {name} stopped early")
                try:
                    if self._read_to_end(consumer, topics):
                        break
                except KafkaException as e:
                    log.info("compare --stack: broker did not answer (%s): asking again", e)
                if time.monotonic() > deadline:
                    raise StackError(f"compare --stack {self.arch}: {name} did not catch up")
                time.sleep(0.5)
        finally:
            consumer.close()
        proc.send_signal(signal.SIGTERM)
        self._wait(name, proc, deadline)

    def _read_to_end(self, consumer: Consumer, topics: tuple[str, ...]) -> bool:
        """Has the ``compare`` group committed the end of every one-partition topic?"""
        for name in topics:
            tp = TopicPartition(self.settings.topic(name), 0)
            low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            if high <= low:
                continue
            (committed,) = consumer.committed([tp], timeout=5)
            if committed.error is not None or committed.offset < high:
                return False
        return True

    def _central(self, idle: float | None) -> subprocess.Popen:
        return self._start(
            "central",
            "central",
            "run",
            "--task",
            self.task,
            "--model",
            self.config.spec_name,
            "--batch-size",
            "1",
            *(["--idle-exit", str(idle)] if idle is not None else []),
            "--group",
            "compare",
            "--worker-id",
            "central",
        )


def _collect(arch: str, settings: Settings, stream: Stream, config: SimConfig) -> Run:
    index = {eid: i for i, eid in enumerate(stream.event_ids)}
    run = Run(arch, np.zeros(len(stream)), [""] * len(stream))
    scored = np.zeros(len(stream), dtype=bool)
    want_central = arch == "centralized"
    for value, size, topic in _read_all(settings, ("scores", "model-updates", "global-model")):
        if topic == "model-updates":
            run.bytes_summaries += size
            run.summaries += 1
            continue
        if topic == "global-model":
            run.merges += 1
            continue
        record = _decode(value)
        if (record["source"] == "central") != want_central:
            continue  # the hybrid centre's own scores are not the sites' scores
        i = index.get(record["event_id"])
        if i is not None and not scored[i]:
            run.scores[i], run.sources[i] = float(record["score"]), record["source"]
            scored[i] = True
    for path in (settings.state_dir / "edge").glob("*/scores-offline.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            i = index.get(record["event_id"])
            if i is not None and not scored[i]:
                run.scores[i], run.sources[i], scored[i] = record["score"], record["source"], True
    missing = int((~scored).sum())
    if missing:
        raise StackError(f"compare --stack {arch}: {missing} events have no score")
    if arch == "centralized":
        run.bytes_raw = int(stream.raw_bytes.sum())
    elif arch == "hybrid":
        run.bytes_raw = sum(size for _v, size, _t in _read_all(settings, RAW_TOPICS))
    run.bytes_globals = _global_pulls(settings)
    return run


def _global_pulls(settings: Settings) -> int:
    """Bytes of the global models the agents adopted (each adoption is one download)."""
    sizes = [size for _v, size, _t in _read_all(settings, ("global-model",))]
    if not sizes:
        return 0
    adoptions = 0
    for path in (settings.state_dir / "fleet").glob("*.log"):
        adoptions += path.read_text(errors="replace").count("global model adopted")
    return int(adoptions * float(np.mean(sizes)))


def _decode(value: bytes) -> dict[str, Any]:
    from schemas import Codec

    return Codec().decode(value)


def _read_all(settings: Settings, names: tuple[str, ...]) -> list[tuple[bytes, int, str]]:
    """Every message of the given one-partition topics: (value, size, logical name)."""
    consumer = Consumer(
        {
            **kafka_security(settings),
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "compare-read",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    out: list[tuple[bytes, int, str]] = []
    try:
        for name in names:
            tp = TopicPartition(settings.topic(name), 0)
            lo, hi = consumer.get_watermark_offsets(tp, timeout=10)
            if hi <= lo:
                continue
            consumer.assign([TopicPartition(tp.topic, 0, lo)])
            got = 0
            deadline = time.monotonic() + 60
            while got < hi - lo and time.monotonic() < deadline:
                for m in consumer.consume(10_000, timeout=1.0):
                    if m.error() is None:
                        out.append((m.value(), len(m.value() or b""), name))
                        got += 1
    finally:
        consumer.close()
    return out
