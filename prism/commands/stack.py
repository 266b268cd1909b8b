"""`prism stack up | down | status`: the local Kafka + Redis stack."""

from __future__ import annotations

import argparse
import json
import sys
import time

from prism import stack
from runtime.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stack", help="Local Kafka + Redis on 127.0.0.1 (no Docker).")
    # `up` must see only the real environment: a stale stack file is not a user's cluster.
    parser.set_defaults(use_stack_file=False)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="Start Kafka and Redis; print PRISM_* lines.")
    up.add_argument(
        "--brokers",
        type=brokers_arg,
        default=1,
        help="Kafka nodes (KRaft broker + controller each); 3 or more gives topics "
        "replication factor 3 and min.insync.replicas 2 (default: %(default)s)",
    )
    up.set_defaults(handler=cmd_up)
    actions.add_parser("down", help="Stop what `up` started.").set_defaults(handler=cmd_down)
    status = actions.add_parser("status", help="Health of each component.")
    status.add_argument("--json", action="store_true", help=f"print {JSON_HELP}")
    status.set_defaults(handler=cmd_status)


JSON_HELP = (
    "a JSON list, one object per component: name, healthy, pid, alive (null: not ours), "
    "reachable, address, detail"
)


def brokers_arg(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 9:
        raise argparse.ArgumentTypeError("--brokers takes 1 to 9 nodes")
    return value


def component_json(row: stack.ComponentStatus) -> dict:
    """The stable keys of one component (`prism stack status --json`, `prism status --json`)."""
    return {
        "name": row.name,
        "healthy": row.healthy,
        "pid": row.pid,
        "alive": row.alive,
        "reachable": row.reachable,
        "address": row.address,
        "detail": row.detail,
    }


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Print only ``KEY=value`` lines on stdout, so ``eval "$(prism stack up)"`` works."""
    began = time.monotonic()
    info = stack.up(settings, brokers=args.brokers)
    for key, value in info.env_lines().items():
        print(f"{key}={value}")
    parts = [f"started {', '.join(info.started) or 'nothing'}"]
    if info.kafka_brokers > 1:
        parts.append(f"kafka is {info.kafka_brokers} brokers: {info.kafka_bootstrap}")
    if info.reused:
        parts.append(f"already running: {', '.join(info.reused)}")
    if info.given:
        parts.append(f"given by PRISM_* environment: {', '.join(info.given)}")
    print(
        f"prism: {'; '.join(parts)} ({time.monotonic() - began:.1f}s); "
        f"addresses in {settings.env_file}",
        file=sys.stderr,
    )
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    stopped = stack.down(settings)
    print(f"prism: stopped {', '.join(stopped) or 'nothing (not running)'}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """One row per component; the exit code says whether all of them are healthy."""
    rows = stack.status(settings)
    if args.json:
        print(json.dumps([component_json(row) for row in rows]))
        return 0 if all(row.healthy for row in rows) else 1
    print(f"{'component':<10} {'healthy':<8} {'pid':<8} {'alive':<6} {'address':<22} detail")
    for row in rows:
        alive = "-" if row.alive is None else ("yes" if row.alive else "NO")
        print(
            f"{row.name:<10} {'yes' if row.healthy else 'NO':<8} {row.pid or '-':<8} "
            f"{alive:<6} {row.address:<22} {row.detail}"
        )
    return 0 if all(row.healthy for row in rows) else 1
