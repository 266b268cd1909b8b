"""Learning quality: every architecture on six logs at ``prism compare``'s defaults, one run.

Not a test: prints figures measured in this run (``--json``: stdout is one
JSON object). In-process, no Kafka or Redis: ``prism compare``'s engine
(an EdgeLearner per site, the merge job's Merger and strategies, prequential
ROC AUC from one report code), configured exactly as the command configures
it -- the flags are parsed by the CLI's own parser and turned into a
SimConfig by :func:`prism.commands.compare.prepare`, so the figures here are
the ones ``prism compare --data LOG`` prints and cannot drift from them.

Logs (made with the project's own CLI into ``--work DIR`` or a temporary
directory; a log is reused when a file there was made by the same command):

- ``demo``: the log ``make demo`` generates (20,000 fraud events, 8 stores,
  2 regions, seed 7, inline labels, 3 % fraud);
- ``fraud``: ``prism datagen fraud --events 60000 --sites 20 --skew 5 --seed 7``
  (late labels, strongly non-IID stores);
- ``iot``: ``prism datagen iot --events 60000 --sites 20 --skew 0.1 --seed 7``
  (anomaly detection; labels only grade);
- ``phishing``, ``shuttle``, ``bananas``: River's bundled sets as
  ``prism dataset export NAME`` over 10, 10 and 6 sites (skew 0.5, 0.5, 0.3);
  shuttle is an IoT log.

Targets (the issue's), evaluated per log and printed as PASS / MISS with the
margin (positive: by how much the target is met; negative: by how much missed):

- (a) every log: hybrid >= max(local, federated) - 0.005 -- the hybrid is
  never worse than what either of its halves gets alone;
- (b) phishing, fraud, shuttle: federated >= 0.95 x centralized -- moving
  summaries instead of events costs at most 5 % of the metric;
- (c) iot: hybrid > centralized -- per-site models that also share beat one
  model of every machine.

A missed target is a figure, not an error: the exit status is 0 unless
something failed to run. Besides, one outage run per task (``--outage``,
default 0.5:0.3:0.6: half the sites cut off from 30 % to 60 % of the stream)
on the fraud and iot logs reports each architecture's metric during and after
the outage (``prism compare --outage``'s own outage section).

``--jobs N`` runs the logs (and the outage runs) in N processes; the figures
do not depend on it (every run is deterministic for its log, flags and seed).
The full run takes a few minutes on 2 cores (``--jobs 2``).

``--held-out`` runs nine logs *not* in the table instead (fraud seeds 21-24,
Phishing, Bananas and Shuttle split otherwise): methods are chosen there, so
nothing is tuned to the table; ``--extra "FLAGS"`` adds `prism compare` flags
to every run, to measure a non-default.

Run: ``.venv/bin/python bench/learning_quality.py [--logs demo,fraud,...]
[--held-out] [--extra "--strategy fedavgm"] [--work DIR] [--jobs 2]
[--outage 0.5:0.3:0.6] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism.cli import build_parser
from prism.cli import main as prism
from prism.commands.compare import prepare
from prism.commands.demo import datagen_argv
from prism.compare.engine import Outage, simulate
from prism.compare.report import build_report
from runtime.errors import PrismError

ARCHS = ("centralized", "federated", "hybrid", "local")
DEFAULT_OUTAGE = "0.5:0.3:0.6"
HYBRID_SLACK = 0.005  # (a): hybrid may trail the better of local and federated by this much
FEDERATED_SHARE = 0.95  # (b): federated keeps at least this share of centralized
TARGETS = {
    "a": f"hybrid >= max(local, federated) - {HYBRID_SLACK}",
    "b": f"federated >= {FEDERATED_SHARE} x centralized",
    "c": "hybrid > centralized",
}


@dataclass(frozen=True)
class Log:
    """One event log: the `prism` command that makes it (without ``--out``) and what to check."""

    name: str
    command: tuple[str, ...]
    task: str  # `prism compare --task`: fraud or iot (only checks the record type)
    checks: tuple[str, ...]
    outage: bool = False  # also an outage run on this log
    cost: int = 1  # rough relative run time, to start the long runs first


def _demo_command() -> tuple[str, ...]:
    """`make demo`'s datagen command at `prism demo`'s default --events / --sites."""
    args = build_parser().parse_args(["demo"])
    argv = datagen_argv(args.events, args.sites, Path("-"))
    return tuple(argv[: argv.index("--out")])


def _log(name: str, command: str, task: str, checks: str, **kw: Any) -> Log:
    return Log(name, tuple(shlex.split(command)), task, tuple(checks), **kw)


# fmt: off
LOGS = (
    Log("demo", _demo_command(), "fraud", ("a",), cost=8),
    _log("fraud", "datagen fraud --events 60000 --sites 20 --skew 5 --seed 7", "fraud", "ab",
         outage=True, cost=25),
    _log("iot", "datagen iot --events 60000 --sites 20 --skew 0.1 --seed 7", "iot", "ac",
         outage=True, cost=60),
    _log("phishing", "dataset export phishing --sites 10 --skew 0.5", "fraud", "ab", cost=1),
    _log("shuttle", "dataset export shuttle --sites 10 --skew 0.5", "iot", "ab", cost=40),
    _log("bananas", "dataset export bananas --sites 6 --skew 0.3", "fraud", "a", cost=2),
)
#: logs *not* in the table, to choose methods on (docs/learning-quality.md): a change must
#: help here too, or at least not lose, before it becomes a default (``--held-out``)
HELD_OUT = (
    *(
        _log(f"fraud{seed}", f"datagen fraud --events 30000 --sites {sites} --skew {skew} "
             f"--seed {seed}", "fraud", "ab", cost=12)
        for seed, sites, skew in ((21, 10, 2), (22, 11, 0.5), (23, 12, 2), (24, 13, 0.5))
    ),
    _log("phish20", "dataset export phishing --sites 20 --skew 0.3", "fraud", "ab", cost=1),
    _log("phish5", "dataset export phishing --sites 5 --skew 1", "fraud", "ab", cost=1),
    _log("banana10", "dataset export bananas --sites 10 --skew 0.5", "fraud", "a", cost=2),
    _log("banana4", "dataset export bananas --sites 4 --skew 2", "fraud", "a", cost=2),
    _log("shuttle8", "dataset export shuttle --sites 8 --skew 1 --seed 21", "iot", "ab",
         cost=40),
)
# fmt: on


# -- logs ----------------------------------------------------------------------
def make_log(log: Log, work: Path) -> tuple[str, Path, str]:
    """Write ``work/NAME.avro`` with the log's command, unless the same command made it."""
    path = work / f"{log.name}.avro"
    stamp = work / f"{log.name}.avro.cmd"
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == list(log.command):
        return log.name, path, "reused"
    partial = work / f"{log.name}.partial.avro"
    stamp.unlink(missing_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the figures / the JSON
        code = prism([*log.command, "--out", str(partial)])
    if code != 0:
        raise PrismError(f"`prism {' '.join(log.command)}` exited with {code}")
    os.replace(partial, path)
    stamp.write_text(json.dumps(list(log.command)))
    return log.name, path, "generated"


# -- comparisons ---------------------------------------------------------------
def compare(
    name: str, path: Path, task: str, outage: str | None, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """``prism compare --data PATH --task TASK [--outage X] [EXTRA]``: the report."""
    argv = ["compare", "--data", str(path), "--task", task, "--no-progress", *extra]
    args = build_parser().parse_args([*argv, *(["--outage", outage] if outage else [])])
    began = time.perf_counter()
    stream, config = prepare(args)
    runs = simulate(stream, config)
    report = build_report(stream, runs, config, threshold=args.threshold, windows=args.windows)
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["log"] = name
    return report


def compare_defaults(extra: Sequence[str] = ()) -> dict[str, Any]:
    """`prism compare`'s flags as its parser has them (its defaults unless ``extra``)."""
    args = vars(build_parser().parse_args(["compare", "--data", "-", *extra]))
    skip = {"command", "handler", "data", "task", "log_level", "json", "plot", "no_progress"}
    return {k: v for k, v in args.items() if k not in skip and not k.startswith("stack")}


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per architecture: the metric, its ratio to centralized and the bytes moved."""
    return {
        name: {
            "metric": a["metric"],
            "metric_name": a["metric_name"],
            "ratio_to_centralized": a["ratio_to_centralized"],
            "bytes_moved": a["bytes_moved"],
        }
        for name, a in report["architectures"].items()
    }


def outage_rows(report: dict[str, Any], calm: dict[str, Any]) -> dict[str, Any]:
    """Per architecture: metric without the outage, during it and after it."""
    rows = {}
    for name, a in report["architectures"].items():
        o = a["outage"]
        rows[name] = {
            "metric": a["metric"],
            "metric_without_outage": calm["architectures"][name]["metric"],
            "metric_during": o["metric_during"],
            "metric_after": o["metric_after"],
            "scored_disconnected": o["scored_disconnected"],
            "merges_during": o["merges_during"],
        }
    return {"outage": report["outage"], "seconds": report["seconds"], "architectures": rows}


# -- targets -------------------------------------------------------------------
def check(target: str, metrics: dict[str, float | None]) -> dict[str, Any]:
    """One target on one log's metrics: value, threshold, margin (value - threshold), pass."""
    m = metrics
    if target == "a":
        parts = (m["hybrid"], m["local"], m["federated"])
        value = m["hybrid"]
        threshold = None if None in parts else max(m["local"], m["federated"]) - HYBRID_SLACK
    elif target == "b":
        value = m["federated"]
        threshold = None if m["centralized"] is None else FEDERATED_SHARE * m["centralized"]
    elif target == "c":
        value, threshold = m["hybrid"], m["centralized"]
    else:
        raise ValueError(f"unknown target {target!r}")
    margin = None if value is None or threshold is None else value - threshold
    passed = None if margin is None else (margin > 0 if target == "c" else margin >= 0)
    return {
        "target": target,
        "rule": TARGETS[target],
        "value": value,
        "threshold": threshold,
        "margin": None if margin is None else round(margin, 6),
        "pass": passed,  # None: a metric is undefined (one class only)
    }


# -- the run -------------------------------------------------------------------
def _serial(fn: Callable[..., Any], *args: Any) -> Future:
    future: Future = Future()
    future.set_result(fn(*args))
    return future


def run(
    logs: Sequence[Log],
    work: Path,
    *,
    jobs: int = 1,
    outage: str | None = DEFAULT_OUTAGE,
    extra: Sequence[str] = (),
    say: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Make the logs, compare every architecture on each, check the targets: the result."""
    began = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    submit = pool.submit if pool is not None else _serial

    def note(message: str) -> None:
        say(f"[{time.perf_counter() - began:6.1f} s] {message}")

    try:
        paths: dict[str, Path] = {}
        for future in [submit(make_log, log, work) for log in logs]:
            name, path, how = future.result()
            paths[name] = path
            note(f"{name}: {how} {path}")
        tasks = [(log, None) for log in logs]
        if outage:
            tasks += [(log, outage) for log in logs if log.outage]
        tasks.sort(key=lambda t: -t[0].cost)  # the long runs first
        futures = {
            submit(compare, log.name, paths[log.name], log.task, cut, extra): (log.name, cut)
            for log, cut in tasks
        }
        reports: dict[tuple[str, str | None], dict[str, Any]] = {}
        for future in as_completed(futures):
            name, cut = futures[future]
            reports[name, cut] = future.result()
            kind = f"outage {cut}" if cut else "compared"
            note(f"{name}: {kind} in {reports[name, cut]['seconds']:.1f} s")
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    out: dict[str, Any] = {}
    for log in logs:
        report = reports[log.name, None]
        archs = summary(report)
        metrics = {name: a["metric"] for name, a in archs.items()}
        out[log.name] = {
            "command": ["prism", *log.command, "--out", paths[log.name].name],
            "task": log.task,
            "events": report["events"],
            "labelled": report["labelled"],
            "positives": report["positives"],
            "sites": report["sites"],
            "model": report["model"],
            "seconds": report["seconds"],
            "architectures": archs,
            "checks": {t: check(t, metrics) for t in log.checks},
            "outage": (
                outage_rows(reports[log.name, outage], report) if outage and log.outage else None
            ),
        }
    results = [c["pass"] for entry in out.values() for c in entry["checks"].values()]
    return {
        "compare_flags": compare_defaults(extra),
        "targets": TARGETS,
        "outage": outage,
        "jobs": jobs,
        "logs": out,
        "passed": results.count(True),
        "missed": results.count(False),
        "undefined": results.count(None),
        "seconds": round(time.perf_counter() - began, 1),
    }


# -- printing ------------------------------------------------------------------
def _f(v: float | None, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def _verdict(c: dict[str, Any]) -> str:
    return {True: "PASS", False: "MISS", None: "N/A"}[c["pass"]]


def table(result: dict[str, Any]) -> str:
    head = (
        f"{'log':<9} {'events':>7} {'sites':>5} {'centralized':>11} "
        f"{'federated (ratio)':>18} {'hybrid (ratio)':>17} {'local':>7}  checks"
    )
    lines = [head, "-" * len(head)]
    for name, e in result["logs"].items():
        a = e["architectures"]

        def with_ratio(arch: str, a: dict[str, Any] = a) -> str:
            return f"{_f(a[arch]['metric'])} ({_f(a[arch]['ratio_to_centralized'], '.3f')})"

        checks = " ".join(
            f"{t}:{_verdict(c)} {_f(c['margin'], '+.4f')}" for t, c in e["checks"].items()
        )
        lines.append(
            f"{name:<9} {e['events']:>7,} {e['sites']:>5} {_f(a['centralized']['metric']):>11} "
            f"{with_ratio('federated'):>18} {with_ratio('hybrid'):>17} "
            f"{_f(a['local']['metric']):>7}  {checks}"
        )
    lines += ["", "targets (margin = value - threshold; a MISS has a negative margin):"]
    lines += [f"  ({t}) {rule}" for t, rule in result["targets"].items()]
    for name, e in result["logs"].items():
        for t, c in e["checks"].items():
            lines.append(
                f"  {name:<9} ({t}) {_verdict(c):<4} value {_f(c['value'])} threshold "
                f"{_f(c['threshold'])} margin {_f(c['margin'], '+.4f')}"
            )
    lines += ["", "bytes moved:"]
    for name, e in result["logs"].items():
        moved = "  ".join(f"{arch} {a['bytes_moved']:,}" for arch, a in e["architectures"].items())
        lines.append(f"  {name:<9} {moved}")
    outages = {name: e["outage"] for name, e in result["logs"].items() if e["outage"]}
    if outages:
        lines += ["", f"outage {result['outage']} (fraction of sites : start : end of the stream):"]
        lines.append(
            f"  {'log':<9} {'architecture':<12} {'no outage':>9} {'with':>7} {'during':>7} "
            f"{'after':>7} {'cut-off scores':>14} {'merges during':>13}"
        )
        for name, o in outages.items():
            for arch, r in o["architectures"].items():
                lines.append(
                    f"  {name:<9} {arch:<12} {_f(r['metric_without_outage']):>9} "
                    f"{_f(r['metric']):>7} {_f(r['metric_during']):>7} "
                    f"{_f(r['metric_after']):>7} {r['scored_disconnected']:>14,} "
                    f"{r['merges_during']:>13}"
                )
    lines += [
        "",
        f"targets: {result['passed']} PASS, {result['missed']} MISS"
        + (f", {result['undefined']} N/A" if result["undefined"] else ""),
        f"total wall time {result['seconds']:.1f} s (--jobs {result['jobs']})",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="the held-out logs instead of the table's (to choose methods on, not to report)",
    )
    parser.add_argument("--logs", help="a subset of the logs, comma-separated (default: all)")
    parser.add_argument(
        "--extra",
        default="",
        help="more `prism compare` flags for every run, one string (measure a non-default)",
    )
    parser.add_argument("--work", type=Path, help="where the logs are made / reused (temp dir)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--outage",
        default=DEFAULT_OUTAGE,
        help="FRACTION:START:END of the outage runs on fraud and iot",
    )
    parser.add_argument("--no-outage", action="store_true", help="skip the outage runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    pool = HELD_OUT if args.held_out else LOGS
    names = [log.name for log in pool]
    wanted = names if args.logs is None else [n.strip() for n in args.logs.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown or not wanted:
        parser.error(f"--logs: choose from {','.join(names)} (got {args.logs!r})")
    extra = shlex.split(args.extra)
    try:
        build_parser().parse_args(["compare", "--data", "-", *extra])
    except SystemExit:
        parser.error(f"--extra: not `prism compare` flags: {args.extra!r}")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    logs = [log for log in pool if log.name in wanted]
    outage = None if args.no_outage else args.outage
    if outage is not None:
        try:
            Outage.parse(outage)
        except ValueError as e:
            parser.error(str(e))

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        with contextlib.ExitStack() as stack:
            work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            result = run(logs, work, jobs=args.jobs, outage=outage, extra=extra, say=say)
    except PrismError as e:
        print(f"learning_quality: error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
