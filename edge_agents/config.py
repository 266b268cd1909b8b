"""What an edge agent is told at start; every field is a ``prism edge run`` flag."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_agents.learner import EdgePolicy
from schemas.tasks import TASKS

__all__ = ["EdgeConfig", "parse_cadence"]

MODES = ("private", "hybrid")
GLOBAL_SOURCES = ("topic", "registry")
QUANTIZE = ("float32", "float16", "int8")


def parse_cadence(text: str) -> tuple[int | None, float | None]:
    """``"500"`` -> every 500 events; ``"30s"`` -> every 30 s; ``"500,30s"`` -> both.

    >>> parse_cadence("500"), parse_cadence("2.5s"), parse_cadence("100,10s")
    ((500, None), (None, 2.5), (100, 10.0))
    """
    events: int | None = None
    seconds: float | None = None
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if m := re.fullmatch(r"(\d+)", part):
            events = int(m.group(1))
        elif m := re.fullmatch(r"(\d+(?:\.\d+)?)s", part):
            seconds = float(m.group(1))
        else:
            raise ValueError(f"--summary-every takes N (events) and/or Ts (seconds), got {part!r}")
    if events is None and seconds is None:
        raise ValueError("--summary-every needs N events or Ts seconds")
    if (events is not None and events < 1) or (seconds is not None and seconds <= 0):
        raise ValueError("--summary-every must be positive")
    return events, seconds


@dataclass(frozen=True, kw_only=True)
class EdgeConfig:
    node_id: str
    task: str = "fraud"
    model: str | None = None
    source: str = ""
    region: str | None = None
    mode: str = "private"
    forward_sample: float = 1.0
    summary_every_events: int | None = 500
    summary_every_s: float | None = 30.0
    rate: float | None = None
    speedup: float | None = None
    start_at: float | None = None  # --speedup's time zero, epoch seconds (shared by a fleet)
    start_at_file: Path | None = None  # ... read from this file once it appears
    sites: frozenset[str] | None = None
    state_dir: Path | None = None
    globals_from: str = "topic"
    quantize: str | None = "float32"
    metrics_port: int | None = None
    idle_exit_s: float | None = None
    drain_timeout_s: float = 60.0
    max_bugs_in_row: int = 10  # more records in a row hitting an internal error stop the agent
    secure_agg: bool = False  # increments go through SecAgg+ rounds, never in the clear
    policy: EdgePolicy = field(default_factory=EdgePolicy)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._:@-]{1,128}", self.node_id or ""):
            raise ValueError(f"--node must be 1-128 of [A-Za-z0-9._:@-], got {self.node_id!r}")
        if self.task not in TASKS:
            raise ValueError(f"--task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {MODES}, got {self.mode!r}")
        if self.globals_from not in GLOBAL_SOURCES:
            raise ValueError(f"--globals-from must be one of {GLOBAL_SOURCES}")
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise ValueError(f"--quantize must be one of {QUANTIZE}, got {self.quantize!r}")
        if not 0.0 < self.forward_sample <= 1.0:
            raise ValueError(f"--forward-sample must be in (0, 1], got {self.forward_sample}")
        if not self.source:
            raise ValueError("--source FILE or topic:NAME is required")
        if self.max_bugs_in_row < 0:
            raise ValueError(f"--max-bugs-in-row must be >= 0, got {self.max_bugs_in_row}")
        if self.secure_agg:
            from models.secagg.compat import check_spec

            check_spec(self.spec_name)  # ModelError names what is covered
            if self.mode == "hybrid":
                raise ValueError("--secure-agg keeps updates private: it does not go with "
                                 "--mode hybrid, which forwards raw events")  # fmt: skip
        if self.summary_every_events is None and self.summary_every_s is None:
            raise ValueError("summaries need a cadence: N events and/or T seconds")

    @property
    def spec_name(self) -> str:
        return self.model or TASKS[self.task].spec

    @property
    def events_topic(self) -> str:
        return TASKS[self.task].topic

    @property
    def event_schema(self) -> str:
        return TASKS[self.task].schema

    @property
    def source_topic(self) -> str | None:
        return self.source[len("topic:") :] if self.source.startswith("topic:") else None
