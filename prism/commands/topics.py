"""`prism topics create | list`."""

from __future__ import annotations

import argparse
import json

from prism.stack.topics import create_topics, list_topics
from runtime.errors import StackError
from runtime.kafka_security import kafka_security
from runtime.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("topics", help="Create or list Prism's Kafka topics.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="Create every topic (idempotent).")
    create.add_argument("--partitions", type=int, default=None, help="Override PRISM_PARTITIONS.")
    create.set_defaults(handler=cmd_create)
    listing = actions.add_parser("list", help="Topics and partition counts.")
    listing.add_argument(
        "--json",
        action="store_true",
        help='print a JSON list sorted by name: [{"name": ..., "partitions": N}, ...]',
    )
    listing.set_defaults(handler=cmd_list)


def require_bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise StackError("no Kafka configured: run `prism stack up` or set PRISM_KAFKA_BOOTSTRAP")
    return settings.kafka_bootstrap


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    outcome = create_topics(
        settings, bootstrap=require_bootstrap(settings), partitions=args.partitions
    )
    for topic, what in outcome.items():
        print(f"{topic:<32} {what}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    found = list_topics(require_bootstrap(settings), security=kafka_security(settings))
    if args.json:
        print(json.dumps([{"name": n, "partitions": p} for n, p in sorted(found.items())]))
        return 0
    for name, partitions in sorted(found.items()):
        print(f"{name:<32} {partitions}")
    return 0
