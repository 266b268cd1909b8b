"""`prism compare`: the architectures side by side on the same replayed stream."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from prism.commands import (
    MAX_MOVE,
    MOVE_HELP,
    PERSONAL_PULL,
    PULL_HELP,
    SHIFT_GLOBAL,
    SHIFT_HELP,
    add_wire_precision,
)
from runtime.errors import UsageError
from runtime.extras import require_extra
from runtime.settings import Settings

if TYPE_CHECKING:
    from prism.compare.engine import SimConfig
    from prism.compare.stream import Stream


#: --dp-clip's default: below most increments' movement (fraud-linear: median 0.13, 90th
#: percentile 0.29 on a 30k-event, 10-site log); the noise is sigma * clip, and 0.25 cost
#: more AUC (docs/compare.md#privacy)
DP_CLIP = 0.05


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="Centralized vs federated vs hybrid vs local-only.")
    p.add_argument("--data", type=Path, required=True, help="event log (.avro / .jsonl)")
    p.add_argument("--task", choices=("fraud", "iot"), help="check the log's record type")
    p.add_argument("--model", help="model spec (default: fraud-linear / iot-hst by record type)")
    p.add_argument(
        "--architectures",
        default="centralized,federated,hybrid,local",
        help="comma-separated, from centralized, federated, hybrid and local",
    )
    p.add_argument("--strategy", default="fedavg", help="merge strategy, as `prism merger run`")
    p.add_argument("--summary-every", type=int, default=200, help="learned events per summary")
    p.add_argument("--round-size", type=int, help="updates per round (default: half the sites)")
    p.add_argument("--round-timeout-ms", type=int, help="event-time ms a round waits (span/100)")
    p.add_argument(
        "--blend-alpha", type=float, default=0.5, help="hybrid: prior weight of the global"
    )
    p.add_argument("--forward-sample", type=float, default=0.1, help="hybrid: raw events sent")
    p.add_argument(
        "--min-move",
        type=float,
        default=0.0,
        help="sites hold summaries whose weights moved less than this share",
    )
    p.add_argument(
        "--max-move",
        type=float,
        default=MAX_MOVE,
        help=MOVE_HELP,
    )
    p.add_argument(
        "--personal-pull",
        type=float,
        default=PERSONAL_PULL,
        help=f"hybrid: {PULL_HELP}",
    )
    p.add_argument(
        "--shift-global",
        action=argparse.BooleanOptionalAction,
        default=SHIFT_GLOBAL,
        help=f"hybrid: {SHIFT_HELP}",
    )
    p.add_argument("--outage", help="FRACTION:START:END of sites and stream, e.g. 0.5:0.3:0.6")
    p.add_argument(
        "--poison",
        help="FRACTION:KIND[:SCALE[:JITTER]] of sites send scaled|signflip|random "
        "updates (default scale 10), or collude with the round's honest updates: "
        "alie (SCALE = z, default from the site count) or ipm (SCALE = epsilon, "
        "default 0.5), each colluder adding JITTER honest stds of noise; excluded: "
        "a perfect screen sets those sites' learned updates aside (the floor an "
        "attack is read against), e.g. 0.2:signflip, 0.2:alie, 0.2:ipm::0.1, 0.2:excluded",
    )
    p.add_argument("--label-delay", type=int, help="labels arrive N events after their event")
    p.add_argument("--threshold", type=float, default=0.5, help="for F1 / precision / recall")
    p.add_argument("--windows", type=int, default=20, help="windows of the metric over time")
    add_wire_precision(p, "summaries and whole globals", deltas=True)
    p.add_argument(
        "--secure-agg",
        action="store_true",
        help="also run federated through SecAgg+ secure aggregation (fedavg only) and "
        "show its metric, bytes and CPU per round beside clear fedavg",
    )
    p.add_argument(
        "--secure-agg-dropout",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="--secure-agg: each node of a secure round vanishes after sharing keys with "
        "this probability (its increment goes to the next round)",
    )
    p.add_argument(
        "--quality-gate",
        type=float,
        metavar="MARGIN",
        help="also run federated and hybrid with `prism merger run --quality-gate MARGIN` "
        "(holdout: a sample of the log's labelled events) and report versions held back "
        "and the metric with vs without",
    )
    p.add_argument(
        "--gate-min-events",
        type=int,
        default=50,
        help="--quality-gate judges only on at least this many holdout events",
    )
    p.add_argument(
        "--holdout-size", type=int, default=2000, help="--quality-gate: labelled events kept"
    )
    p.add_argument(
        "--canary",
        type=float,
        metavar="SHARE",
        help="also run federated and hybrid with `prism merger run --canary SHARE` (staged "
        "rollout) and report versions promoted, rolled back and the metric with vs without",
    )
    p.add_argument(
        "--canary-margin",
        type=float,
        default=0.0,
        help="--canary: mean log loss the new version may lose to the previous one",
    )
    p.add_argument(
        "--canary-min-events",
        type=int,
        default=200,
        help="--canary: labelled events the canaries score before a verdict",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, noise and attackers")
    p.add_argument(
        "--sweep",
        action="append",
        metavar="NAME=V1,V2,...",
        help="the accuracy/bytes frontier over summary-every, quantize, round-size, "
        "round-timeout-ms, forward-sample, min-move, personal-pull, blend-alpha or strategy "
        "(repeat for a grid); --plot then draws metric vs bytes",
    )
    p.add_argument(
        "--dp-epsilon",
        metavar="E1,E2,...",
        help="also run federated and hybrid with differentially private site updates at "
        "each epsilon (noise calibrated to the busiest site's summaries over the log) and "
        "report the accuracy cost, e.g. 1,4,8 (in process only)",
    )
    p.add_argument(
        "--dp-clip",
        type=float,
        default=DP_CLIP,
        help="--dp-epsilon: L2 clipping norm of a site's update, as `prism edge run --dp-clip`",
    )
    p.add_argument(
        "--dp-delta", type=float, default=1e-5, help="--dp-epsilon: the delta of (epsilon, delta)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--plot", type=Path, help="write the windowed metric as a PNG (the [plot] extra)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument(
        "--stack",
        action="store_true",
        help="also run it through the real local Kafka + Redis services and compare",
    )
    p.add_argument(
        "--stack-seconds",
        type=float,
        default=30.0,
        help="--stack: the agents replay the log on its clock in about this long",
    )
    p.add_argument(
        "--stack-timeout",
        type=float,
        default=1800.0,
        help="seconds each architecture may take on the stack",
    )
    p.set_defaults(handler=cmd_compare)


def prepare(args: argparse.Namespace) -> tuple[Stream, SimConfig]:
    """The stream and the :class:`SimConfig` `prism compare` runs for its parsed ``args``.

    Shared with ``bench/learning_quality.py``, so a bench at the default flags
    (``build_parser().parse_args(["compare", "--data", ...])``) runs exactly
    what the command runs. Raises :class:`UsageError` for bad flags or logs.
    """
    from models.errors import ModelError
    from models.poisoning import Attack
    from prism.compare.engine import ARCHITECTURES, Outage, SimConfig
    from prism.compare.lifecycle import LIFECYCLE_ARCHITECTURES, LifecycleConfig
    from prism.compare.stream import load_stream
    from schemas.tasks import default_spec_for_record

    archs = tuple(a.strip() for a in args.architectures.split(",") if a.strip())
    unknown = set(archs) - set(ARCHITECTURES)
    if unknown or not archs:
        raise UsageError(f"--architectures: choose from {', '.join(ARCHITECTURES)}")
    if not args.data.is_file():
        raise UsageError(f"--data {args.data}: no such file")
    if args.summary_every < 1 or args.windows < 1:
        raise UsageError("--summary-every and --windows must be >= 1")
    if not (args.dp_clip > 0 and 0 < args.dp_delta < 1):
        raise UsageError("--dp-clip must be > 0 and --dp-delta in (0, 1)")
    if not 0 <= args.secure_agg_dropout < 0.5 or (args.secure_agg_dropout and not args.secure_agg):
        raise UsageError("--secure-agg-dropout takes a fraction in [0, 0.5) with --secure-agg")
    if args.secure_agg and (args.stack or args.sweep):
        raise UsageError(
            "--secure-agg runs in the simulation only: compare's --stack and --sweep drivers do "
            "not set up secure rounds (the services do: `prism merger run --secure-agg`, "
            "`prism edge run --secure-agg`, docs/secure-aggregation.md); drop --stack / --sweep"
        )
    lifecycle_flags = args.quality_gate is not None or args.canary is not None
    if lifecycle_flags and (args.stack or args.sweep or args.dp_epsilon):
        raise UsageError(
            "--quality-gate / --canary run in process only: drop --stack, --sweep, --dp-epsilon"
        )
    if lifecycle_flags and not set(archs) & set(LIFECYCLE_ARCHITECTURES):
        raise UsageError("--quality-gate / --canary need federated or hybrid in --architectures")
    if args.secure_agg:
        from models.secagg.compat import check_secure

        try:
            check_secure(args.strategy)
        except ModelError as e:
            raise UsageError(f"--secure-agg: {e}") from e
    try:
        outage = Outage.parse(args.outage) if args.outage else None
        poison = Attack.parse(args.poison) if args.poison else None
        stream = load_stream(args.data, task=args.task, label_delay=args.label_delay)
        spec_name = args.model or default_spec_for_record(stream.record_type)
        if args.secure_agg:
            from models.secagg.compat import check_spec

            try:
                check_spec(spec_name)
            except ModelError as e:
                raise UsageError(f"--secure-agg: {e}") from e
        config = SimConfig(
            spec_name=spec_name,
            architectures=archs,
            strategy=args.strategy,
            summary_every=args.summary_every,
            round_size=args.round_size,
            round_timeout_ms=args.round_timeout_ms,
            blend_alpha=args.blend_alpha,
            forward_sample=args.forward_sample,
            min_move=args.min_move,
            max_move=args.max_move,
            personal_pull=args.personal_pull,
            shift_global=args.shift_global,
            outage=outage,
            poison=poison,
            seed=args.seed,
            quantize=args.quantize,
            deltas=None if args.deltas == "off" else args.deltas,
            dp_delta=args.dp_delta,
            secure_agg=args.secure_agg,
            secagg_dropout=args.secure_agg_dropout,
            lifecycle=LifecycleConfig(
                quality_gate=args.quality_gate,
                gate_min_events=args.gate_min_events,
                holdout_size=args.holdout_size,
                canary=args.canary,
                canary_margin=args.canary_margin,
                canary_min_events=args.canary_min_events,
            ),
        )
    except (ValueError, ModelError) as e:
        raise UsageError(str(e)) from e
    return stream, config


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from models.errors import ModelError
    from prism.compare.engine import simulate
    from prism.compare.plot import write_plot
    from prism.compare.report import build_report, render_table

    if args.plot:  # before minutes of simulation, not after
        require_extra("plot", needed_by="--plot")
    stream, config = prepare(args)
    if args.sweep:
        return _sweep(args, stream, config)
    epsilons = _epsilons(args, config)
    try:
        show = not (args.no_progress or args.json) and sys.stderr.isatty()
        with tqdm(total=len(stream), unit="ev", disable=not show, mininterval=0.5) as bar:
            runs = simulate(stream, config, progress=bar.update)
    except (ValueError, ModelError) as e:
        raise UsageError(str(e)) from e
    report = build_report(stream, runs, config, threshold=args.threshold, windows=args.windows)
    if args.stack:
        from prism.compare.stack import run_on_stack

        stacked = run_on_stack(
            settings,
            args.data,
            stream,
            config,
            timeout=args.stack_timeout,
            replay_seconds=args.stack_seconds,
        )
        inprocess = report
        report = build_report(
            stream, stacked, config, threshold=args.threshold, windows=args.windows
        )
        report["engine"] = "stack"
        report["agreement"] = agreement(inprocess, report)
    if epsilons:
        report["privacy"] = _privacy(args, stream, config, epsilons, report)
    if args.plot:
        report["plot"] = str(write_plot(report, args.plot))
    if args.json:
        print(json.dumps(report))
    else:
        print(render_table(report))
        if epsilons:
            from prism.compare.privacy import render_privacy

            print("\n".join(render_privacy(report["privacy"])))
        if args.plot:
            print(f"plot: {args.plot}")
        for name, a in report.get("agreement", {}).items():
            print(
                f"stack vs in-process {name:<12} {a['metric_stack']:.4f} vs "
                f"{a['metric_in_process']:.4f} (diff {a['diff']:.4f}, tolerance "
                f"{a['tolerance']}) {'agrees' if a['agrees'] else 'DISAGREES'}"
            )
    return 0


def _epsilons(args: argparse.Namespace, config: SimConfig) -> tuple[float, ...]:
    """``--dp-epsilon``'s values, checked before any simulation runs."""
    if not args.dp_epsilon:
        return ()
    from prism.compare.privacy import DP_ARCHITECTURES, parse_epsilons

    if args.stack:
        raise UsageError("--dp-epsilon runs in process only: drop --stack")
    if not set(config.architectures) & set(DP_ARCHITECTURES):
        raise UsageError("--dp-epsilon needs federated or hybrid in --architectures")
    try:
        return parse_epsilons(args.dp_epsilon)
    except ValueError as e:
        raise UsageError(str(e)) from e


def _privacy(
    args: argparse.Namespace,
    stream: Stream,
    config: SimConfig,
    epsilons: tuple[float, ...],
    report: dict,
) -> dict:
    from tqdm import tqdm

    from models.errors import ModelError
    from prism.compare.privacy import run_privacy

    show = not (args.no_progress or args.json) and sys.stderr.isatty()
    try:
        with tqdm(
            total=len(stream) * len(epsilons), unit="ev", disable=not show, mininterval=0.5
        ) as bar:
            return run_privacy(
                stream,
                config,
                epsilons,
                report["architectures"],
                clip=args.dp_clip,
                threshold=args.threshold,
                progress=bar.update,
            )
    except (ValueError, ModelError) as e:
        raise UsageError(str(e)) from e


def _sweep(args: argparse.Namespace, stream: Stream, config: SimConfig) -> int:
    from tqdm import tqdm

    from models.errors import ModelError
    from prism.compare.plot import write_frontier
    from prism.compare.sweep import parse_sweeps, render_sweep, run_sweep

    if args.stack:
        raise UsageError("--sweep runs in process only: drop --stack")
    try:
        axes = parse_sweeps(args.sweep)
        points = 1
        for _, values in axes:
            points *= len(values)
        show = not (args.no_progress or args.json) and sys.stderr.isatty()
        with tqdm(
            total=len(stream) * (points + 1), unit="ev", disable=not show, mininterval=0.5
        ) as bar:
            sweep = run_sweep(stream, config, axes, threshold=args.threshold, progress=bar.update)
    except (ValueError, ModelError) as e:
        raise UsageError(str(e)) from e
    report = {
        "events": len(stream),
        "sites": len(stream.site_names),
        "model": config.spec_name,
        "metric_name": "roc_auc",
        "sweep": sweep,
    }
    if args.plot:
        title = f"{config.spec_name} on {len(stream):,} events, {len(stream.site_names)} sites"
        report["plot"] = str(write_frontier(sweep, args.plot, title=title))
    if args.json:
        print(json.dumps(report))
    else:
        print(render_sweep(sweep))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def agreement(inprocess: dict, stacked: dict) -> dict[str, dict]:
    """Per architecture: the stack's metric against the simulation's, and the tolerance."""
    from prism.compare.stack import TOLERANCE

    out = {}
    for name, a in stacked["architectures"].items():
        sim = inprocess["architectures"][name]["metric"]
        diff = abs((a["metric"] or 0.0) - (sim or 0.0))
        out[name] = {
            "metric_stack": a["metric"] or 0.0,
            "metric_in_process": sim or 0.0,
            "diff": diff,
            "tolerance": TOLERANCE[name],
            "agrees": diff <= TOLERANCE[name],
        }
    return out
