"""`prism edge run|fleet`: edge agents that learn locally and keep scoring when cut off."""

from __future__ import annotations

import argparse
from pathlib import Path

from prism.commands import (
    MAX_MOVE,
    MOVE_HELP,
    PERSONAL_PULL,
    PULL_HELP,
    SHIFT_GLOBAL,
    SHIFT_HELP,
    TASK_HELP,
    add_wire_precision,
)
from runtime.errors import UsageError
from runtime.settings import Settings


def _agent_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=("fraud", "iot"), default="fraud", help=TASK_HELP)
    p.add_argument("--model", help="model spec (default: fraud-linear / iot-hst)")
    p.add_argument("--region", help="region id for the merger's regional tier")
    p.add_argument(
        "--mode",
        choices=("private", "hybrid"),
        default="private",
        help="private: no raw event leaves the node; hybrid: forward raw events",
    )
    p.add_argument(
        "--forward-sample",
        type=float,
        default=1.0,
        help="hybrid mode: share of events forwarded (stable by event id)",
    )
    p.add_argument(
        "--summary-every",
        default="500,30s",
        help="N events and/or Ts seconds between summaries, e.g. 500, 30s, 500,30s",
    )
    p.add_argument("--rate", type=float, help="events/s to read the file at (default: flat out)")
    p.add_argument(
        "--speedup", type=float, help="replay the file on its own clock, this many times faster"
    )
    p.add_argument(
        "--start-at",
        type=float,
        metavar="EPOCH_S",
        help="--speedup: wall-clock time (epoch s) of the log's first record, so "
        "agents started apart share one clock (default: each at its start)",
    )
    p.add_argument(
        "--start-at-file",
        type=Path,
        metavar="PATH",
        help="--speedup: read that time from PATH, waiting until it exists (a launcher "
        "writes it once every agent is up)",
    )
    p.add_argument(
        "--globals-from",
        choices=("topic", "registry"),
        default="topic",
        help="global models from the compacted global-model topic or the registry",
    )
    p.add_argument(
        "--blend-alpha",
        type=float,
        default=0.5,
        help="prior weight of the global model in the score's mix with the personal model, "
        "learned from the node's labels after (1 = global only, 0 = personal only)",
    )
    p.add_argument(
        "--global-max-age",
        type=float,
        default=600.0,
        help="seconds after which a global model is stale: score with the local one",
    )
    p.add_argument(
        "--reconcile",
        choices=("delta", "replace", "blend"),
        default="delta",
        help="how the local model continues when a global model arrives",
    )
    p.add_argument("--dp-clip", type=float, help="differential privacy: clip weight updates")
    p.add_argument("--dp-noise", type=float, default=0.0, help="DP noise multiplier (sigma)")
    p.add_argument("--dp-seed", type=int, default=0, help="seed of the node's DP noise")
    p.add_argument(
        "--dp-delta",
        type=float,
        default=1e-5,
        help="the delta at which the node's epsilon is accounted (RDP accountant)",
    )
    p.add_argument(
        "--dp-epsilon-budget",
        type=float,
        metavar="EPS",
        help="stop publishing summaries once the next one would spend more epsilon than "
        "this (the node keeps learning and scoring locally)",
    )
    p.add_argument(
        "--min-move",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="adaptive cadence: hold a due summary whose weights moved less than this share "
        "of their norm (at most 4 in a row; 0 = always send)",
    )
    p.add_argument("--max-move", type=float, default=MAX_MOVE, metavar="SHARE", help=MOVE_HELP)
    p.add_argument(
        "--personal-pull", type=float, default=PERSONAL_PULL, metavar="SHARE", help=PULL_HELP
    )
    p.add_argument(
        "--shift-global",
        action=argparse.BooleanOptionalAction,
        default=SHIFT_GLOBAL,
        help=SHIFT_HELP,
    )
    add_wire_precision(p, "summaries", deltas=False)
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="topic sources: stop after this long without events",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        help="seconds to wait at the end for unsent summaries",
    )
    p.add_argument(
        "--secure-agg",
        action="store_true",
        help="secure aggregation: no summary is sent in the clear; each increment is offered "
        "to the merger's SecAgg+ rounds (`prism merger run --secure-agg`), masked, and marked "
        "sent when a published round holds it (fraud-linear only)",
    )
    p.add_argument(
        "--max-bugs-in-row",
        type=int,
        default=10,
        metavar="K",
        help="a record that hits an internal error (a bug, not a bad record) is dead-lettered "
        "with its exception type and a trace id; more than K in a row stop the agent with "
        "exit code 70, which the supervisor does not restart",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("edge", help="Edge agents: local learning, fallback scoring.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="One edge agent over the node's own events.")
    run.add_argument("--node", required=True, help="this node's id (key of its summaries)")
    run.add_argument("--source", required=True, help="the node's log FILE, or topic:NAME")
    run.add_argument("--sites", help="comma-separated site ids of the log that are this node's")
    run.add_argument("--state-dir", type=Path, help="outbox and files (default STATE/edge/NODE)")
    _agent_flags(run)
    run.set_defaults(handler=cmd_run)
    fleet = actions.add_parser("fleet", help="K agents (processes) over one site-split log.")
    fleet.add_argument("--nodes", type=int, required=True, help="number of agents")
    fleet.add_argument("--data", type=Path, required=True, help="the event log to split by site")
    fleet.add_argument("--prefix", default="edge", help="node ids are PREFIX-0 .. PREFIX-K-1")
    _agent_flags(fleet)
    fleet.set_defaults(handler=cmd_fleet)


def config_from(args: argparse.Namespace, **overrides: object):
    from edge_agents.config import EdgeConfig, parse_cadence
    from edge_agents.learner import EdgePolicy
    from models.errors import ModelError

    try:
        every_n, every_s = parse_cadence(args.summary_every)
        policy = EdgePolicy(
            blend_alpha=args.blend_alpha,
            global_max_age_s=args.global_max_age,
            reconcile_rule=args.reconcile,
            dp_clip=args.dp_clip,
            dp_noise=args.dp_noise,
            dp_seed=args.dp_seed,
            dp_delta=args.dp_delta,
            dp_epsilon_budget=args.dp_epsilon_budget,
            min_move=args.min_move,
            max_move=args.max_move,
            personal_pull=args.personal_pull,
            shift_global=args.shift_global,
        )
        fields = dict(
            node_id=getattr(args, "node", "fleet"),
            task=args.task,
            model=args.model,
            source=getattr(args, "source", None) or str(getattr(args, "data", "")),
            region=args.region,
            mode=args.mode,
            forward_sample=args.forward_sample,
            summary_every_events=every_n,
            summary_every_s=every_s,
            rate=args.rate,
            speedup=args.speedup,
            start_at=args.start_at,
            start_at_file=args.start_at_file,
            globals_from=args.globals_from,
            quantize=args.quantize,
            metrics_port=args.metrics_port,
            idle_exit_s=args.idle_exit,
            drain_timeout_s=args.drain_timeout,
            max_bugs_in_row=args.max_bugs_in_row,
            secure_agg=args.secure_agg,
            policy=policy,
        )
        fields.update(overrides)
        return EdgeConfig(**fields)  # type: ignore[arg-type]
    except (ValueError, ModelError) as e:
        raise UsageError(str(e)) from e


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from edge_agents.run import run

    sites = frozenset(s for s in (args.sites or "").split(",") if s) or None
    config = config_from(args, sites=sites, state_dir=args.state_dir)
    return run(settings, config)


_FLEET_PASS = (
    "task",
    "model",
    "region",
    "mode",
    "forward_sample",
    "summary_every",
    "rate",
    "speedup",
    "start_at",
    "start_at_file",
    "globals_from",
    "blend_alpha",
    "global_max_age",
    "reconcile",
    "dp_clip",
    "dp_noise",
    "dp_seed",
    "dp_delta",
    "dp_epsilon_budget",
    "min_move",
    "max_move",
    "personal_pull",
    "shift_global",
    "quantize",
    "idle_exit",
    "drain_timeout",
    "max_bugs_in_row",
    "secure_agg",
)


_NEGATABLE = frozenset({"shift_global"})  # switches that default on (--no-NAME)


def fleet_flags(args: argparse.Namespace) -> list[str]:
    """The flags each agent of a fleet gets: the fleet's own, as ``edge run`` spells them."""
    passed: list[str] = []
    for name in _FLEET_PASS:
        value, flag = getattr(args, name), f"--{name.replace('_', '-')}"
        if isinstance(value, bool):  # a switch: present, or negated where it defaults on
            passed += [flag] if value else [f"--no-{flag[2:]}"] if name in _NEGATABLE else []
        elif value is not None:
            passed += [flag, str(value)]
    return passed


def cmd_fleet(args: argparse.Namespace, settings: Settings) -> int:
    from edge_agents.fleet import run_fleet

    config_from(args)  # every flag checked once, before K processes start
    passed = fleet_flags(args)
    try:
        return run_fleet(
            args.data, args.nodes, passed, prefix=args.prefix, log_dir=settings.state_dir / "fleet"
        )
    except ValueError as e:
        raise UsageError(str(e)) from e
