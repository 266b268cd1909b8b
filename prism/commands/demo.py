"""`prism demo`: the README's main job on the local stack, start to finish.

It starts what is missing (a real Kafka broker and Redis), creates the topics,
generates a non-IID fraud log over N stores, starts the services as local
processes (`prism up`: central learner, merger, one edge agent per store
scoring and learning its own events), replays the log through Kafka for the
central learner, reads every event back, waits until the registry holds a
global model merged from every edge and the central model, prints the
registry and the services, stops them, prints the `prism compare` table of
the same log and writes its PNG, and stops what it started.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer

from prism import stack
from prism.stack.topics import create_topics
from runtime.errors import PrismError
from runtime.kafka_security import kafka_security
from runtime.settings import Settings, load_settings
from schemas import Codec


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="Run the whole demo on the local stack.")
    parser.add_argument("--events", type=int, default=20_000, help="Events to generate.")
    parser.add_argument("--sites", type=int, default=8, help="Stores in the fraud log.")
    parser.add_argument("--keep", action="store_true", help="Leave the stack running after.")
    parser.add_argument("--out", type=Path, default=Path("out"), help="Where files are written.")
    parser.set_defaults(handler=cmd_demo, use_stack_file=False)


def datagen_argv(events: int, sites: int, out: Path) -> list[str]:
    """The demo log's `prism datagen` command line (``bench/learning_quality.py`` reuses it)."""
    return [
        "datagen",
        "fraud",
        "--events",
        str(events),
        "--sites",
        str(sites),
        "--regions",
        "2",
        "--seed",
        "7",
        "--labels",
        "inline",
        "--fraud-rate",
        "0.03",
        "--out",
        str(out),
    ]


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


@contextmanager
def running_stack(settings: Settings, *, keep: bool) -> Iterator[Settings]:
    """The stack for the demo; stops what it started unless ``keep``."""
    began = time.monotonic()
    info = stack.up(settings)
    say(
        f"stack ready in {time.monotonic() - began:.1f}s: kafka={info.kafka_bootstrap} "
        f"(started: {', '.join(info.started) or 'nothing'})"
    )
    try:
        yield load_settings()
    finally:
        if info.started and not keep:
            say(f"stopping {', '.join(stack.down(settings))}")


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    began = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    with running_stack(settings, keep=args.keep) as live:
        bootstrap = live.kafka_bootstrap or ""
        created = create_topics(live, bootstrap=bootstrap)
        say(f"topics: {len(created)} ready ({', '.join(sorted(created))})")
        log_path = args.out / "demo-fraud.avro"
        say(f"generating {args.events} fraud events over {args.sites} stores -> {log_path}")
        run_prism(*datagen_argv(args.events, args.sites, log_path))
        say(f"starting the services (prism up): central learner, merger, {args.sites} edge agents")
        try:
            run_prism(
                "up", "--edges", str(args.sites), "--data", str(log_path), "--edge-rate", "1000"
            )
            say("replaying the log into Kafka for the central learner")
            run_prism("replay", str(log_path), "--no-progress")
            counted = count_decoded(live, live.topic("transactions"), expected=args.events)
            say(f"read back {counted} transactions from Kafka, every one decoded by the Avro codec")
            if counted < args.events:
                raise PrismError(f"only {counted} of {args.events} events came back from Kafka")
            version, edges = wait_for_models(live, args.sites)
            say(f"global model v{version} merged with all {edges} edges; central model published")
            run_prism("models", "list")
            run_prism("models", "nodes")
            run_prism("ps")
        finally:
            run_prism("down", "--keep-stack")
        png = args.out / "compare.png"
        say(f"comparing the architectures on the same log (prism compare) -> {png}")
        run_prism("compare", "--data", str(log_path), "--plot", str(png), "--no-progress")
    say(f"demo finished in {time.monotonic() - began:.0f} s")
    return 0


def wait_for_models(settings: Settings, edges: int, timeout: float = 300.0) -> tuple[int, int]:
    """Until a global model has every edge among its contributors and the merger has
    recorded the central learner's shards (its partitions' summaries)."""
    from runtime.model_registry import RegistryClient, RegistryKeys

    assert settings.redis_url is not None
    client = RegistryClient(settings.redis_url.get_secret_value(), keys=RegistryKeys())
    wanted = {f"edge-{i}" for i in range(edges)}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            names = set(client.models())
            central = any(n["tier"] == "central" for n in client.nodes())
            if "fraud-linear" in names and central:
                history = client.history("fraud-linear")
                seen = {c["node_id"] for v in history for c in v["contributors"]}
                if wanted <= seen:
                    return int(history[0]["version"]), len(wanted)
            time.sleep(1.0)
    finally:
        client.close()
    raise PrismError(
        f"no global model with all {edges} edges within {timeout:.0f} s: see `prism ps`"
    )


def run_prism(*argv: str) -> None:
    """Run a `prism` sub-command in-process, as a user would type it."""
    from prism.cli import main  # the CLI imports this module: import at call time

    code = main(list(argv))
    if code != 0:
        raise PrismError(f"`prism {' '.join(argv)}` exited with {code}")


def count_decoded(settings: Settings, topic: str, *, expected: int, timeout: float = 60.0) -> int:
    """Consume ``topic`` from the start until ``expected`` events decoded or time runs out."""
    codec = Codec(max_bytes=settings.max_message_bytes)
    consumer = Consumer(
        {
            **kafka_security(settings),
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"prism-demo-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    count, deadline = 0, time.monotonic() + timeout
    try:
        while count < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=5000, timeout=1.0):
                if message.error() is None:
                    codec.decode(message.value(), expected="Transaction")
                    count += 1
    finally:
        consumer.close()
    print(f"   ({count} events in {time.monotonic() - deadline + timeout:.1f}s)", file=sys.stderr)
    return count
