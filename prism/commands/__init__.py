"""Sub-commands of ``prism``; each module exposes ``register(subparsers)``.

A command handler takes ``(args, settings)`` and returns a process exit code.
"""

from __future__ import annotations

import argparse


def add_redis_wait(parser: argparse.ArgumentParser) -> None:
    """``--redis-wait``, shared by the services that keep their state in Redis."""
    parser.add_argument(
        "--redis-wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="while Redis is away the service goes on and writes its state when Redis is back; "
        "a step that cannot go on without it (restore, the last write) waits this long",
    )


TASK_HELP = "fraud (transactions) or iot (sensor-readings)"

PRECISIONS = ("float64", "float32", "float16", "int8")  # models.packing.PACK_DTYPES

#: edge_agents.learner.EdgePolicy.personal_pull, without importing the learner at start-up
PERSONAL_PULL = 0.01
#: edge_agents.learner.EdgePolicy.shift_global, likewise
SHIFT_GLOBAL = True
#: edge_agents.learner.EdgePolicy.max_move, likewise
MAX_MOVE = 0.0
MOVE_HELP = (
    "movement cadence: a site sends its summary early (checked every summary-every/8 "
    "learned events) once its weights moved more than this share of their norm (0 = off)"
)
SHIFT_HELP = (
    "classifiers: mix in the global shifted to the site's share of positives as a third "
    "expert, awake while the site's labels favour the global over its personal model "
    "(helps under label skew; default on)"
)
PULL_HELP = (
    "Ditto-style personal models: per event learned, a site's personal slopes move this "
    "share toward each new global's (its base rate stays its own; 0 = never)"
)


def add_wire_precision(parser: argparse.ArgumentParser, what: str, *, deltas: bool) -> None:
    """``--quantize`` (and ``--deltas``): the float precision on the wire (docs/bytes.md)."""
    parser.add_argument(
        "--quantize",
        choices=PRECISIONS,
        default="float32",
        help=f"float precision of {what} on the wire (counts stay exact; float64 = lossless)",
    )
    if deltas:
        parser.add_argument(
            "--deltas",
            choices=(*PRECISIONS[:3], "off"),
            default="float16",
            help="globals between whole ones as deltas from the version before, floats as this",
        )
