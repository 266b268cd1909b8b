"""`prism central run`: the central online learner (a Faust worker)."""

from __future__ import annotations

import argparse

from prism.commands import add_redis_wait
from runtime.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("central", help="The central online learner (Faust).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="Score every event, learn from labels, checkpoint.")
    run.add_argument("--task", choices=("fraud", "iot"), default="fraud")
    run.add_argument("--model", help="model spec (default: fraud-linear / iot-hst)")
    run.add_argument("--group", help="consumer group = checkpoint namespace (prism-central-TASK)")
    run.add_argument("--worker-id", help="this worker's name in scores and the registry")
    run.add_argument("--batch-size", type=int, default=1000, help="events per mini-batch")
    run.add_argument("--batch-wait", type=float, default=0.05, help="max seconds to fill a batch")
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
        help="consumption engine: confluent-kafka batches (default) or a Faust agent",
    )
    add_redis_wait(run)
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from streams.central.config import CentralConfig
    from streams.central.partition import LearnerConfig
    from streams.central.run import run

    config = CentralConfig(
        task=args.task,
        model=args.model,
        group=args.group,
        worker_id=args.worker_id,
        batch_size=args.batch_size,
        batch_wait_s=args.batch_wait,
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
