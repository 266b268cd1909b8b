"""`prism topics create | list | tail | decode`."""

from __future__ import annotations

import argparse
import json
import sys

from prism.stack.topics import create_topics, list_topics
from runtime.errors import StackError, UsageError
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
    _register_tail(actions)
    _register_decode(actions)


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


def _register_tail(actions: argparse._SubParsersAction) -> None:
    tail = actions.add_parser(
        "tail",
        help="Print a topic's records decoded, one per line (bytes as base64).",
        description="Decode any Prism topic (events, scores, labels, summaries, globals, dead "
        "letters). Joins no consumer group and commits nothing. A value that fails to decode "
        "is printed with its reason and raw bytes, and the tail goes on.",
    )
    tail.add_argument(
        "topic", help="topic name, with or without PRISM_TOPIC_PREFIX (e.g. scores, prism.scores)"
    )
    tail.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at each partition's first record (default: only records produced from now)",
    )
    tail.add_argument(
        "--max",
        type=int,
        default=None,
        metavar="N",
        help="stop after N records (default: none, follow until Ctrl-C)",
    )
    tail.add_argument(
        "--idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop when no record arrived for this long (default: none, keep waiting)",
    )
    tail.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line with topic, partition, offset, timestamp_ms, key, schema "
        "and value (default: a readable line ending in the record as JSON)",
    )
    tail.set_defaults(handler=cmd_tail)


def _register_decode(actions: argparse._SubParsersAction) -> None:
    from prism.wire_json import FRAMINGS

    decode = actions.add_parser(
        "decode",
        help="Decode raw values from stdin to JSON lines (e.g. piped from kcat).",
        description="kcat: kcat -C -t prism.scores -e -f '%S %s\\n' | prism topics decode. "
        "Prints one JSON object per value: {schema, value}, or {error, raw_base64}.",
    )
    decode.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="kcat",
        help="how values are delimited on stdin: kcat = '<length> <bytes>' as kcat -f '%%S %%s\\n' "
        "prints; base64/hex = one value per line; raw = all of stdin is one value "
        "(default: %(default)s)",
    )
    decode.set_defaults(handler=cmd_decode)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from prism.tail import Tail
    from prism.wire_json import dumps

    if args.max is not None and args.max < 1:
        raise UsageError(f"--max must be >= 1, got {args.max}")
    tail = Tail(
        require_bootstrap(settings),
        args.topic,
        prefix=settings.topic_prefix,
        security=kafka_security(settings),
        from_beginning=args.from_beginning,
    ).setup()
    try:
        for record in tail.records(limit=args.max, idle_s=args.idle):
            print(dumps(record) if args.json else _readable(record), flush=True)
    finally:
        tail.close()
    return 0


def _readable(r: dict) -> str:
    from prism.wire_json import dumps

    where = f"{r['topic']}[{r['partition']}]@{r['offset']} key={r.get('key')}"
    if "error" in r:
        e = r["error"]
        return f"{where} UNDECODABLE {e['reason_code']}: {e['reason']} raw_base64={r['raw_base64']}"
    return f"{where} {r['schema']} {dumps(r['value']) if r['value'] is not None else 'null'}"


def cmd_decode(args: argparse.Namespace, settings: Settings) -> int:
    from prism.wire_json import dumps, read_frames, render_value
    from schemas import Codec

    codec = Codec(max_bytes=64 * 1024 * 1024)
    for value in read_frames(sys.stdin.buffer, args.framing):
        print(dumps(render_value(codec, value)), flush=True)
    return 0
