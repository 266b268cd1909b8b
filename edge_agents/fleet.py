"""``prism edge fleet``: K agent processes over one site-split log, for demos and tests.

The log's site ids are dealt round-robin to K nodes (sorted, so the split is
the same on every run); each node runs ``prism edge run --sites ...`` as its
own process with its own state dir, exactly what K separate devices would
run. SIGTERM/SIGINT is passed on to every agent, which then sends a last
summary; the fleet exits with the worst exit code.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from schemas.eventlog import read_events

log = logging.getLogger(__name__)

__all__ = ["plan", "run_fleet"]


def site_ids(path: Path) -> list[str]:
    sites = {
        e.record["site_id"]
        for e in read_events(path, on_error=lambda _bad: None)
        if e.record_type != "Label" and e.record.get("site_id")
    }
    return sorted(sites)


def plan(sites: Sequence[str], nodes: int, prefix: str = "edge") -> list[tuple[str, list[str]]]:
    """Node ids and their sites: round-robin over the sorted site ids.

    >>> plan(["a", "b", "c"], 2)
    [('edge-0', ['a', 'c']), ('edge-1', ['b'])]
    """
    if nodes < 1:
        raise ValueError(f"--nodes must be >= 1, got {nodes}")
    if len(sites) < nodes:
        raise ValueError(f"the log has {len(sites)} site ids, fewer than --nodes {nodes}")
    return [(f"{prefix}-{i}", list(sites[i::nodes])) for i in range(nodes)]


def run_fleet(
    data: Path, nodes: int, agent_args: Sequence[str], *, prefix: str = "edge", log_dir: Path
) -> int:
    """Run the agents to completion (or until signalled); the worst exit code."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    for node_id, sites in plan(site_ids(data), nodes, prefix):
        cmd = [
            sys.executable,
            "-m",
            "prism.cli",
            "edge",
            "run",
            "--node",
            node_id,
            "--source",
            str(data),
            "--sites",
            ",".join(sites),
            *agent_args,
        ]
        out = (log_dir / f"{node_id}.log").open("ab")
        procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT))  # noqa: S603
        log.info("edge agent started node=%s sites=%s pid=%s", node_id, len(sites), procs[-1].pid)

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [proc.wait() for proc in procs]
    log.info("edge fleet done exit_codes=%s logs=%s", codes, log_dir)
    return max(codes, default=0)
