"""`prism merger run`: the global merge job over model-updates."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from prism.commands import add_redis_wait, add_wire_precision
from runtime.errors import UsageError
from runtime.settings import Settings

if TYPE_CHECKING:
    from streams.merger.secure import SecureConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("merger", help="The global merge job.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="Merge node summaries into global models, in rounds.")
    run.add_argument(
        "--strategy",
        default="fedavg",
        help="fedavg | fedmedian | trimmed:0.1 | krum | multikrum:f=1,m=3 | exact | async | "
        "fedavgm | fedadam; options after a colon, e.g. async:max_staleness=5, fedavg:screen=true",
    )
    run.add_argument("--round-size", type=int, default=10, help="updates that close a round")
    run.add_argument(
        "--round-timeout", type=float, default=30.0, help="seconds after which a round closes"
    )
    run.add_argument(
        "--min-participants", type=int, default=1, help="a timed-out round waits for this many"
    )
    run.add_argument(
        "--tiers", default="global", help="'global' or 'regional,global' (merge per region first)"
    )
    run.add_argument("--dedup-window", type=int, default=64, help="sequences remembered per node")
    add_wire_precision(
        run, "whole globals (the merger goes on from what the sites get)", deltas=True
    )
    run.add_argument(
        "--whole-every", type=int, default=16, help="every n-th global version goes whole"
    )
    run.add_argument("--group", default="prism-merger", help="consumer group = state namespace")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    run.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="stop after this long without updates (bounded runs, tests, benchmarks)",
    )
    run.add_argument(
        "--event-time",
        action="store_true",
        help="rounds open and time out on the event time the updates carry (replays, "
        "prism compare --stack), not on their arrival and the wall clock",
    )
    run.add_argument(
        "--speedup",
        type=float,
        default=1.0,
        help="--event-time: the event clock runs this many times faster than the wall clock",
    )
    run.add_argument(
        "--holdout-topic",
        metavar="TOPIC",
        help="score every new global on a sample of the labelled events of this topic (logical "
        "name, e.g. holdout) before publishing it; the score is stored with the version",
    )
    run.add_argument(
        "--holdout-size", type=int, default=2000, help="labelled events kept (uniform sample)"
    )
    run.add_argument(
        "--quality-gate",
        type=float,
        metavar="MARGIN",
        help="hold back a global whose holdout metric is worse than the published one's by "
        "more than MARGIN (needs --holdout-topic); recorded in the history and on lifecycle",
    )
    run.add_argument(
        "--gate-min-events",
        type=int,
        default=50,
        help="--quality-gate judges only on at least this many holdout events",
    )
    run.add_argument(
        "--canary",
        type=float,
        metavar="SHARE",
        help="staged rollout: each new global goes first to this share of the edges (chosen "
        "by node id); promoted to all when they do not do worse, rolled back when they do",
    )
    run.add_argument(
        "--canary-margin",
        type=float,
        default=0.0,
        help="--canary: mean log loss the new version may lose to the previous one",
    )
    run.add_argument(
        "--canary-min-events",
        type=int,
        default=200,
        help="--canary: labelled events the canaries score before a verdict",
    )
    run.add_argument(
        "--secure-agg",
        action="store_true",
        help="also run SecAgg+ rounds with the nodes in secure mode (`prism edge run "
        "--secure-agg`) over the secagg-* topics: the merger learns only each round's sum; "
        "FedAvg, FedAvgM or FedAdam (robust strategies are refused; async stays for clear nodes)",
    )
    run.add_argument(
        "--secure-step-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="--secure-agg: a node that has not sent a step this long after it began has "
        "dropped out (key advertisement waits --round-timeout after the first node)",
    )
    run.add_argument(
        "--secure-model",
        default="fraud-linear",
        metavar="SPEC",
        help="--secure-agg: the model spec whose secure rounds this merger runs "
        "(fraud-linear or iot-gauss: their merge is sums)",
    )
    run.add_argument(
        "--secure-max-dropout",
        type=float,
        default=0.3,
        metavar="FRACTION",
        help="--secure-agg: dropouts a round survives; with more it is abandoned and its "
        "nodes offer their increments to the next round",
    )
    add_redis_wait(run)
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from models.canary import CanaryPolicy
    from models.errors import ModelError
    from streams.merger.gate import QualityGate
    from streams.merger.rounds import MergerConfig
    from streams.merger.run import HoldoutOptions, run

    try:
        config = MergerConfig(
            strategy=args.strategy,
            round_size=args.round_size,
            round_timeout_s=args.round_timeout,
            min_participants=args.min_participants,
            tiers=tuple(t.strip() for t in args.tiers.split(",") if t.strip()),
            dedup_window=args.dedup_window,
            quantize=args.quantize,
            deltas=None if args.deltas == "off" else args.deltas,
            whole_every=args.whole_every,
        )
        if not args.speedup > 0:
            raise ValueError(f"--speedup must be > 0, got {args.speedup}")
        holdout = None
        if args.quality_gate is not None and args.holdout_topic is None:
            raise ValueError("--quality-gate judges on the holdout: give --holdout-topic too")
        if args.holdout_topic is not None:
            gate = None
            if args.quality_gate is not None:
                gate = QualityGate(args.quality_gate, min_events=args.gate_min_events)
            holdout = HoldoutOptions(args.holdout_topic, size=args.holdout_size, gate=gate)
        secure = _secure_config(args) if args.secure_agg else None
        canary = None
        if args.canary is not None:
            canary = CanaryPolicy(
                args.canary, margin=args.canary_margin, min_events=args.canary_min_events
            )
    except (ValueError, ModelError) as e:
        raise UsageError(str(e)) from e
    return run(
        settings,
        config,
        group=args.group,
        idle_exit_s=args.idle_exit,
        metrics_port=args.metrics_port,
        redis_wait_s=args.redis_wait,
        event_time=args.event_time,
        speedup=args.speedup,
        holdout=holdout,
        canary=canary,
        secure=secure,
    )


def _secure_config(args: argparse.Namespace) -> SecureConfig:
    """Secure rounds' settings; robust strategies refused (they need each update)."""
    from models.secagg.compat import check_secure, check_spec
    from models.strategy_base import split_spec
    from streams.merger.secure import SecureConfig

    if split_spec(args.strategy, positional={"trimmed": "beta"})[0] != "async":
        check_secure(args.strategy)  # async applies to the nodes not in secure mode only
    if args.tiers != "global":
        raise ValueError("--secure-agg runs global rounds only (no --tiers regional)")
    check_spec(args.secure_model)
    return SecureConfig(
        model_name=args.secure_model,
        round_size=max(args.round_size, 2),
        min_participants=max(args.min_participants, 2),
        keys_timeout_s=args.round_timeout,
        step_timeout_s=args.secure_step_timeout,
        max_dropout=args.secure_max_dropout,
    )
