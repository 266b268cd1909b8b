"""`prism central run | reset`: the central online learner and its checkpoints."""

from __future__ import annotations

import argparse

from prism.commands import TASK_HELP, add_redis_wait
from runtime.errors import StackError
from runtime.extras import require_extra
from runtime.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "central", help="The central online learner (confluent-kafka batches; Faust optional)."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="Score every event, learn from labels, checkpoint.")
    run.add_argument("--task", choices=("fraud", "iot"), default="fraud", help=TASK_HELP)
    run.add_argument("--model", help="model spec (default: fraud-linear / iot-hst)")
    run.add_argument(
        "--group", help="consumer group = checkpoint namespace (default: prism-central-TASK)"
    )
    run.add_argument(
        "--worker-id", help="this worker's name in scores and the registry (default: GROUP@host)"
    )
    run.add_argument("--batch-size", type=int, default=1000, help="most events per mini-batch")
    run.add_argument(
        "--max-delay-ms",
        type=float,
        default=10.0,
        help="latency budget: a batch waits for more records only while its oldest is younger "
        "than 30 %% of it; the producer lingers a tenth of it (at most 5 ms)",
    )
    run.add_argument(
        "--checkpoint-every", type=int, default=50_000, help="records between checkpoints"
    )
    run.add_argument(
        "--checkpoint-interval", type=float, default=2.0, help="seconds between checkpoints"
    )
    run.add_argument(
        "--summary-interval", type=float, default=10.0, help="seconds between summaries"
    )
    run.add_argument(
        "--label-ttl",
        type=float,
        default=86_400.0,
        help="seconds of event time a scored event waits for its label",
    )
    run.add_argument(
        "--max-pending", type=int, default=200_000, help="pending events per partition"
    )
    run.add_argument(
        "--max-waiting",
        type=int,
        default=50_000,
        help="labels waiting for their events per partition before labels are paused",
    )
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    run.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="stop once caught up and idle this long (bounded runs, benchmarks)",
    )
    run.add_argument(
        "--engine",
        choices=("kafka", "faust"),
        default="kafka",
        help="consumption engine: confluent-kafka batches, or a Faust agent (the [faust] extra)",
    )
    add_redis_wait(run)
    run.set_defaults(handler=cmd_run)
    reset = actions.add_parser(
        "reset", help="Delete a group's checkpoints (refused while the group has live workers)."
    )
    reset.add_argument(
        "--group", required=True, help="the consumer group, e.g. prism-central-fraud"
    )
    reset.add_argument(
        "--yes", action="store_true", help="really delete (without it: say what would go, exit 2)"
    )
    reset.add_argument(
        "--delete-offsets",
        action="store_true",
        help="also delete the group in Kafka: the next worker learns from the earliest record "
        "(without it: from where the group left off)",
    )
    reset.set_defaults(handler=cmd_reset)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.engine == "faust":
        require_extra("faust", needed_by="--engine faust")
    from streams.central.config import CentralConfig
    from streams.central.partition import LearnerConfig
    from streams.central.run import run

    config = CentralConfig(
        task=args.task,
        model=args.model,
        group=args.group,
        worker_id=args.worker_id,
        batch_size=args.batch_size,
        max_delay_s=args.max_delay_ms / 1000,
        checkpoint_every_events=args.checkpoint_every,
        checkpoint_every_s=args.checkpoint_interval,
        summary_every_s=args.summary_interval,
        redis_wait_s=args.redis_wait,
        metrics_port=args.metrics_port,
        learner=LearnerConfig(
            ttl_ms=int(args.label_ttl * 1000),
            max_pending=args.max_pending,
            max_waiting=args.max_waiting,
        ),
    )
    return run(settings, config, idle_exit_s=args.idle_exit, engine=args.engine)


def cmd_reset(args: argparse.Namespace, settings: Settings) -> int:
    import redis
    from confluent_kafka.admin import AdminClient

    from runtime.kafka_security import kafka_security
    from runtime.model_registry.keys import RegistryKeys
    from streams.central.checkpoint import CheckpointStore
    from streams.central.reset import describe, reset

    if not settings.kafka_bootstrap or settings.redis_url is None:
        raise StackError(
            "no Kafka or Redis configured: run `prism stack up` or set PRISM_KAFKA_BOOTSTRAP "
            "and PRISM_REDIS_URL (a Redis user that may delete checkpoints)"
        )
    admin = AdminClient({**kafka_security(settings), "bootstrap.servers": settings.kafka_bootstrap})
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=10)
    # the reset loads no checkpoint, so the event schema is never used
    store = CheckpointStore(
        client,
        group=args.group,
        worker_id="prism-central-reset",
        event_schema="",
        keys=RegistryKeys(settings.redis_prefix),
    )
    try:
        outcome = reset(store, admin, confirmed=args.yes, delete_offsets=args.delete_offsets)
    except redis.RedisError as e:
        raise StackError(f"Redis: {e}") from e
    finally:
        client.close()
    print(f"prism: {describe(outcome)}")
    return 0
