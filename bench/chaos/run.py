"""``make chaos``: a seeded schedule of faults under steady load, then the invariants checked.

Starts a broker and a redis-server of its own (so it can kill them), the
topics, a merger, central worker(s) and edge agents as ``prism`` processes,
and ``prism replay`` at ``--rate`` events/s of a generated fraud log. While
the load runs it applies :func:`chaos.schedule.make_schedule`'s faults -- each
in its own thread, at its time: kill -9 / SIGTERM a target and start it again
after the fault's duration, SIGSTOP/SIGCONT it, or cut an edge off its link;
broker and Redis are killed or stopped and restarted on the same ports. Then
the load stops, services drain and exit on their own (``--idle-exit``), and
:mod:`chaos.check` proves the invariants. On a violation it prints the seed,
the parameters and the schedule -- enough to replay the run -- and exits 1.

Run: ``.venv/bin/python bench/chaos/run.py --minutes 5 [--seed N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from helpers.runs import datagen_log  # noqa: E402
from helpers.services import service_env  # noqa: E402

from chaos import check as checker  # noqa: E402
from chaos.schedule import Fault, dumps, make_schedule  # noqa: E402
from chaos.services import Broker, Redis, Service  # noqa: E402
from prism.stack.topics import create_topics  # noqa: E402
from runtime.settings import Settings  # noqa: E402

PROCESS_KINDS = ("kill9", "sigterm", "pause")
INFRA_KINDS = ("kill9", "sigterm")
GROUP = "chaos-central"
RECORDS_PER_EVENT = 2  # a Transaction and its Label: --rate paces records


@dataclass(frozen=True)
class Params:
    """Everything that shapes a run besides the seed (printed with it, for a replay)."""

    seconds: float = 300.0
    centrals: int = 1
    edges: int = 2
    rate: int = 200  # records/s replayed to the centre (transactions + labels)
    edge_rate: int = 40  # records/s each edge reads
    mean_gap: float = 6.0
    fault_s: tuple[float, float] = (1.0, 6.0)
    targets: tuple[str, ...] = ("central", "merger", "edge", "broker", "redis")


@dataclass
class Result:
    seed: int
    params: Params
    schedule: list[Fault]
    applied: list[dict] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0

    def survived(self) -> dict[str, int]:
        """Faults applied (not skipped) per kind, and per target kind."""
        done = [a for a in self.applied if a["applied"]]
        kinds = Counter(a["kind"] for a in done)
        targets = Counter(a["target"].split("-")[0] for a in done)
        return {**{f"kind:{k}": n for k, n in kinds.items()},
                **{f"target:{k}": n for k, n in targets.items()}}  # fmt: skip

    def replay_text(self) -> str:
        return (
            f"seed={self.seed} params={json.dumps(asdict(self.params))}\n"
            f"replay: bench/chaos/run.py --seed {self.seed} --seconds {self.params.seconds} "
            f"--centrals {self.params.centrals} --edges {self.params.edges} "
            f"--rate {self.params.rate} --edge-rate {self.params.edge_rate}\n"
            f"schedule:\n{dumps(self.schedule)}"
        )


def targets_of(params: Params) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if "central" in params.targets:
        out |= {f"central-{i}": list(PROCESS_KINDS) for i in range(params.centrals)}
    if "merger" in params.targets:
        out["merger"] = list(PROCESS_KINDS)
    if "edge" in params.targets:
        out |= {f"edge-{i}": [*PROCESS_KINDS, "link-cut"] for i in range(params.edges)}
    out |= {t: list(INFRA_KINDS) for t in ("broker", "redis") if t in params.targets}
    return out


def wait_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{text!r} not in {path} after {timeout} s")
        time.sleep(0.2)


def apply(
    fault: Fault, target, t0: float, result: Result, lock: threading.Lock, busy: threading.Lock
) -> None:
    """One fault at its time: begin, hold for its duration, end; what happened is recorded.

    ``busy`` is the target's own lock (broker and Redis share one): a restart
    that takes longer than the schedule allowed (a broker start takes ~15 s
    here) delays the target's next fault instead of overlapping it.
    """
    time.sleep(max(0.0, t0 + fault.at - time.monotonic()))
    with busy:
        _apply(fault, target, t0, result, lock)


def _apply(fault: Fault, target, t0: float, result: Result, lock: threading.Lock) -> None:
    start = time.monotonic()
    row = {**asdict(fault), "applied": False, "began": round(start - t0, 2)}
    try:
        row["applied"] = target.begin(fault.kind)
        time.sleep(max(0.0, start + fault.duration - time.monotonic()))
        if row["applied"]:
            target.end(fault.kind)
        row["ended"] = round(time.monotonic() - t0, 2)
    except Exception as e:  # noqa: BLE001 - a fault that cannot be applied or lifted is a finding
        row["error"] = repr(e)
        with lock:
            result.violations.append(f"fault {fault} failed: {e!r}")
    with lock:
        result.applied.append(row)
    print(f"chaos: {json.dumps(row)}", flush=True)


def build_services(settings: Settings, work: Path, logs: dict[str, Path], p: Params) -> dict:
    env = service_env(settings) | {"PRISM_REDIS_PREFIX": settings.redis_prefix}
    out: dict[str, Service] = {}

    def add(name: str, *args: str, cut: Path | None = None) -> None:
        out[name] = Service(name, args, env, work / f"{name}.log", cut_file=cut)

    add("merger", "merger", "run", "--round-size", "1", "--idle-exit", "30",
        "--group", "chaos-merger")  # fmt: skip
    for i in range(p.centrals):
        add(f"central-{i}", "central", "run", "--task", "fraud", "--group", GROUP,
            "--worker-id", f"c{i}", "--idle-exit", "20", "--checkpoint-interval", "1",
            "--summary-interval", "3")  # fmt: skip
    for i in range(p.edges):
        home = work / f"edge-{i}"
        add(f"edge-{i}", "edge", "run", "--node", f"edge-{i}", "--source",
            str(logs[f"edge-{i}"]), "--state-dir", str(home), "--rate", str(p.edge_rate),
            "--summary-every", "100", "--drain-timeout", "180", cut=home / "link-cut")  # fmt: skip
    return out


def run(seed: int, params: Params, work: Path) -> Result:
    """One chaos run in ``work``; every process it started is gone when it returns."""
    started = time.monotonic()
    result = Result(seed, params, make_schedule(
        seed, duration=params.seconds, targets=targets_of(params), mean_gap=params.mean_gap,
        fault_s=params.fault_s))  # fmt: skip
    broker = Broker(Settings(state_dir=work / "broker"))
    red = Redis(Settings(state_dir=work / "redis"))
    services: dict[str, Service] = {}
    try:
        boot, addresses = broker.start(), red.start()
        settings = Settings(
            kafka_bootstrap=boot, redis_url=addresses.url, redis_query_url=addresses.query_url,
            topic_prefix=f"chaos{seed}.", redis_prefix=f"chaos{seed}", state_dir=work / "state",
        )  # fmt: skip
        create_topics(settings, bootstrap=boot, partitions=3)
        events = int(params.rate * params.seconds / RECORDS_PER_EVENT)
        logs = {"central": datagen_log(work, "central", events, seed)}
        for i in range(params.edges):
            n = int(params.edge_rate * params.seconds / RECORDS_PER_EVENT)
            logs[f"edge-{i}"] = datagen_log(work, f"edge-{i}", n, seed + 1 + i)
        services = build_services(settings, work, logs, params)
        for name, svc in services.items():
            if not name.startswith("edge"):
                svc.start()
        wait_text(services["merger"].log_path, "merger starting", 120)
        for i in range(params.centrals):
            wait_text(services[f"central-{i}"].log_path, "assigned", 120)
        for name, svc in services.items():
            if name.startswith("edge"):
                svc.start()
        replay = Service("replay", ("replay", str(logs["central"]), "--no-progress", "--rate",
                                    str(params.rate)), services["merger"].env,
                         work / "replay.log")  # fmt: skip
        replay.start()
        targets = {**services, "broker": broker, "redis": red}
        lock, t0 = threading.Lock(), time.monotonic()
        busy = {name: threading.Lock() for name in targets}
        busy["redis"] = busy["broker"]  # one infrastructure fault at a time
        threads = [
            threading.Thread(
                target=apply, args=(f, targets[f.target], t0, result, lock, busy[f.target])
            )
            for f in result.schedule
        ]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        finish(replay, services, result)
        killed = frozenset(a["target"] for a in result.applied
                           if a["applied"] and a["kind"] == "kill9")  # fmt: skip
        edges = {f"edge-{i}": (logs[f"edge-{i}"], work / f"edge-{i}") for i in range(params.edges)}
        found, figures = checker.check(checker.Run(settings, GROUP, logs["central"], edges, killed))
        result.violations += found
        result.figures = figures | {"events": events, "starts": {
            n: s.starts for n, s in services.items()}}  # fmt: skip
    finally:
        for svc in services.values():
            svc.stop()
        broker.stop()
        red.stop()
    result.seconds = round(time.monotonic() - started, 1)
    return result


def finish(replay: Service, services: dict[str, Service], result: Result) -> None:
    """Stop the load, let every service drain and exit on its own; each must exit 0."""
    code = replay.wait(600)
    if code != 0:
        result.violations.append(f"the replay (the load) exited {code}, not 0")
    order = [n for n in services if n.startswith("edge")] + [
        n for n in services if not n.startswith("edge")
    ]
    for name in order:
        code = services[name].wait(600)
        services[name].exits.append(code if code is not None else -999)
        if code != 0:
            result.violations.append(f"{name} did not exit 0 after draining (exit {code})")
        text = services[name].log_path.read_text(errors="replace")
        if "Traceback" in text:
            result.figures.setdefault("tracebacks", []).append(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=None, help="length of the load (default 5)")
    ap.add_argument("--seconds", type=float, default=None, help="the same in seconds")
    ap.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    ap.add_argument("--centrals", type=int, default=1)
    ap.add_argument("--edges", type=int, default=2)
    ap.add_argument(
        "--rate", type=int, default=200, help="records/s replayed (a transaction and its label)"
    )
    ap.add_argument("--edge-rate", type=int, default=40, help="records/s each edge reads")
    ap.add_argument("--mean-gap", type=float, default=6.0, help="mean seconds between faults")
    ap.add_argument("--workdir", type=Path, default=None, help="kept (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    seconds = a.seconds or (a.minutes or 5.0) * 60
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
    params = Params(seconds=seconds, centrals=a.centrals, edges=a.edges, rate=a.rate,
                    edge_rate=a.edge_rate, mean_gap=a.mean_gap)  # fmt: skip
    print(f"chaos: seed={seed} seconds={seconds}", flush=True)
    if a.workdir:
        a.workdir.mkdir(parents=True, exist_ok=True)
        result = run(seed, params, a.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="prism-chaos-") as tmp:
            result = run(seed, params, Path(tmp))
    report = {"seed": seed, "seconds": result.seconds, "survived": result.survived(),
              "figures": result.figures, "violations": result.violations}  # fmt: skip
    print(json.dumps(report, indent=None if a.json else 2, default=str))
    if result.violations:
        print("chaos: INVARIANTS BROKEN -- replay with:\n" + result.replay_text(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
