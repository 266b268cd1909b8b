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
