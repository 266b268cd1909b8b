"""`prism shadow run`: edge scores beside the central model's, and how often they disagree."""

from __future__ import annotations

import argparse

from prism.commands import add_redis_wait
from runtime.errors import UsageError
from runtime.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "shadow", help="Hybrid mode: edge vs central scores of the forwarded events."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run", help="Pair edge and central scores of the same events; export their disagreement."
    )
    run.add_argument(
        "--threshold", type=float, default=0.5, help="decisions differ across this score"
    )
    run.add_argument(
        "--window", type=int, default=100_000, help="scores waiting for their pair, per partition"
    )
    run.add_argument("--ttl", type=float, default=600.0, help="seconds a score waits for its pair")
    run.add_argument("--group", default="prism-shadow", help="consumer group = state namespace")
    run.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    run.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="stop after this long caught up without scores (bounded runs, tests)",
    )
    add_redis_wait(run)
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from streams.shadow.run import run

    if args.window < 1 or not args.ttl > 0:
        raise UsageError("--window must be >= 1 and --ttl > 0")
    return run(
        settings,
        group=args.group,
        threshold=args.threshold,
        max_pending=args.window,
        ttl_s=args.ttl,
        idle_exit_s=args.idle_exit,
        metrics_port=args.metrics_port,
        redis_wait_s=args.redis_wait,
    )


def shadow_summary(states: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict]]:
    """Per shadow group and model: the partitions' totals summed (what `prism status` shows)."""
    from streams.shadow.join import ShadowStats

    out: dict[str, dict[str, dict]] = {}
    for group, partitions in sorted(states.items()):
        models: dict[str, ShadowStats] = {}
        unpaired = 0
        for state in partitions.values():
            for model, d in state["stats"].items():
                models[model] = models.get(model, ShadowStats()) + ShadowStats.from_dict(d)
            unpaired += sum(v for k, v in state["counts"].items() if k.startswith("unpaired"))
        out[group] = {m: s.as_dict() | {"unpaired": unpaired} for m, s in sorted(models.items())}
    return out


def render_shadow(summary: dict[str, dict[str, dict]]) -> list[str]:
    lines = []
    for group, models in summary.items():
        for model, s in models.items():
            rate, gap = s["disagreement_rate"], s["mean_abs_diff"]
            lines.append(
                f"  {group} {model}: {s['pairs']:,} pairs, decisions differ "
                + ("-" if rate is None else f"{rate:.2%}")
                + ", mean |p_edge - p_central| "
                + ("-" if gap is None else f"{gap:.4f}")
                + f" ({s['unpaired']:,} scores never paired)"
            )
    return lines
