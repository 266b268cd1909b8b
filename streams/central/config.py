"""What a central worker is told at start: task, model, batching and cadences."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from schemas.tasks import TASKS
from streams.central.batching import BatchPolicy
from streams.central.partition import LearnerConfig


@dataclass(frozen=True, kw_only=True)
class CentralConfig:
    """Settings of one ``prism central run``; every field is a CLI flag.

    ``group`` is the Kafka consumer group *and* the checkpoint namespace:
    workers of one group split the partitions and hand partition state to one
    another through the checkpoints. ``worker_id`` names this process in
    scores, logs and the registry.
    """

    task: str = "fraud"
    model: str | None = None
    group: str | None = None
    worker_id: str | None = None
    batch_size: int = 1000
    max_delay_s: float = 0.010  # the latency budget a batch is cut to (--max-delay-ms)
    checkpoint_every_events: int = 50_000
    checkpoint_every_s: float = 2.0
    summary_every_s: float = 10.0
    redis_wait_s: float = 120.0  # how long a step that needs Redis (a restore) waits for it
    metrics_port: int | None = None
    learner: LearnerConfig = field(default_factory=LearnerConfig)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.batch_size < 1 or not self.max_delay_s > 0:
            raise ValueError("batch size must be >= 1 and the latency budget > 0 ms")
        if self.checkpoint_every_events < 1 or self.checkpoint_every_s <= 0:
            raise ValueError("checkpoints need a positive event count and interval")

    @property
    def batching(self) -> BatchPolicy:
        """How batches are cut: see streams/central/batching.py."""
        return BatchPolicy(max_size=self.batch_size, max_delay_s=self.max_delay_s)

    @property
    def events_topic(self) -> str:
        return TASKS[self.task].topic

    @property
    def event_schema(self) -> str:
        return TASKS[self.task].schema

    @property
    def spec_name(self) -> str:
        return self.model or TASKS[self.task].spec

    @property
    def group_id(self) -> str:
        return self.group or f"prism-central-{self.task}"

    @property
    def worker(self) -> str:
        return self.worker_id or f"{self.group_id}@{socket.gethostname()}"
