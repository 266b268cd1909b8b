"""`prism up / ps / down`: the docker-compose topology as supervised local processes.

Every service signs with its own Ed25519 key and verifies with the trust file
(prism/services/identities.py): the merger takes signed summaries only, and
edges and `prism models` take only globals the merger's key signed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from runtime.errors import StackError, UsageError
from runtime.settings import Settings

MARKER = "prism.cli supervise"
PORTS = {"central-fraud": 9301, "central-iot": 9303, "merger": 9302, "shadow": 9304}
EDGE_PORT = 9310


def register(subparsers: argparse._SubParsersAction) -> None:
    up = subparsers.add_parser("up", help="Stack + central + merger + edges as local processes.")
    up.add_argument("--edges", type=int, default=3, help="edge agents (one per site of --data)")
    up.add_argument(
        "--task",
        choices=("fraud", "iot", "both"),
        default="fraud",
        help="the central learner(s) to run; the edges run the first task",
    )
    up.add_argument("--data", type=Path, help="the edges' log, split by site (default: generated)")
    up.add_argument("--edge-rate", type=float, default=200.0, help="events/s per edge agent")
    up.add_argument(
        "--edge-mode",
        choices=("private", "hybrid"),
        default="private",
        help="hybrid: the edges forward their events to the central learner too, and a "
        "`prism shadow run` job compares the two scores of each (see `prism status`)",
    )
    up.add_argument("--round-size", type=int, help="merger round size (default: --edges)")
    up.add_argument("--wait", type=float, default=120.0, help="seconds to wait for health")
    up.set_defaults(handler=cmd_up, use_stack_file=False)
    ps = subparsers.add_parser("ps", help="Each service of `prism up`: pid, health, lag.")
    ps.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list, one object per service: "
        + ", ".join(SERVICE_KEYS)
        + " ([] and exit 1 when not up)",
    )
    ps.set_defaults(handler=cmd_ps)
    down = subparsers.add_parser("down", help="Stop every service of `prism up`, then the stack.")
    down.add_argument("--keep-stack", action="store_true", help="leave Kafka and Redis running")
    down.set_defaults(handler=cmd_down)
    status = subparsers.add_parser("status", help="One screen: stack, services, models.")
    status.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object: {"stack": [as `prism stack status --json`], "services": '
        '[as `prism ps --json`] or null when not up, "models": [as `prism models list --json`] '
        'or null when the registry is not reachable, "shadow": {group: {model: pairs, '
        "decisions_differ, disagreement_rate, ...}} of `prism shadow run`}",
    )
    status.set_defaults(handler=cmd_status)
    # internal (`prism up` starts it detached): no help=, so `prism --help` does not list it
    sup = subparsers.add_parser("supervise")
    sup.add_argument("home", type=Path, help="the state directory `prism up` planned in")
    sup.set_defaults(handler=cmd_supervise)


def home_of(settings: Settings) -> Path:
    return settings.state_dir / "up"


def plan(args: argparse.Namespace, data: Path, sites: list[str]) -> list:
    """The services, each with the node ids its key signs for (``signs_for``)."""
    from prism.services.supervisor import Service
    from streams.central.config import CentralConfig

    services = []
    tasks = ("fraud", "iot") if args.task == "both" else (args.task,)
    for task in tasks:
        name = f"central-{task}"
        argv = [
            "central",
            "run",
            "--task",
            task,
            "--worker-id",
            name,
            "--metrics-port",
            str(PORTS[name]),
        ]
        shards = f"{CentralConfig(task=task).group_id}/p*"  # streams/central/summaries.py
        services.append(Service(name, argv, PORTS[name], redis_role="central", signs_for=[shards]))
    size = str(args.round_size or args.edges)
    services.append(
        Service(
            "merger",
            [
                "merger",
                "run",
                "--round-size",
                size,
                "--round-timeout",
                "10",
                "--metrics-port",
                str(PORTS["merger"]),
            ],
            PORTS["merger"],
            redis_role="merger",
            signs_for=["global:*"],  # every GlobalModel, and nothing else
        )
    )
    edge_task = tasks[0]
    for i in range(args.edges):
        port = EDGE_PORT + i
        services.append(
            Service(
                f"edge-{i}",
                [
                    "edge",
                    "run",
                    "--node",
                    f"edge-{i}",
                    "--task",
                    edge_task,
                    "--source",
                    str(data),
                    "--sites",
                    sites[i],
                    "--rate",
                    str(args.edge_rate),
                    "--summary-every",
                    "200,10s",
                    "--metrics-port",
                    str(port),
                    "--mode",
                    args.edge_mode,
                ],
                port,
                redis_role="edge",
                signs_for=[f"edge-{i}"],
            )
        )
    if args.edge_mode == "hybrid":
        argv = ["shadow", "run", "--metrics-port", str(PORTS["shadow"])]
        services.append(Service("shadow", argv, PORTS["shadow"], redis_role="shadow"))
    return services


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from prism import stack
    from prism.cli import main as prism
    from prism.services.scrape import write_scrape_config
    from prism.services.supervisor import save_plan
    from prism.stack import process
    from prism.stack.state import read_env_file, write_env_file
    from prism.stack.topics import create_topics

    if args.edges < 0:
        raise UsageError("--edges must be >= 0")
    home = home_of(settings)
    if _supervisor_pid(home):
        raise StackError("already up: `prism ps` shows it, `prism down` stops it")
    info = stack.up(settings)
    env = supervisor_env(os.environ, info.env_lines() | info.role_env(), settings.state_dir)
    create_topics(
        settings.model_copy(update={"kafka_bootstrap": info.kafka_bootstrap}),
        bootstrap=info.kafka_bootstrap,
    )
    data = args.data or home / "data" / "edges.avro"
    if args.data is None and args.edges:
        kind = "iot" if args.task == "iot" else "fraud"
        assert (
            prism(
                [
                    "datagen",
                    kind,
                    "--events",
                    str(2000 * args.edges),
                    "--sites",
                    str(args.edges),
                    "--regions",
                    "1",
                    "--out",
                    str(data),
                ]
            )
            == 0
        )
    sites = _sites(data, args.edges) if args.edges else []
    services = plan(args, data, sites)
    trust = sign(services, home / "keys")
    # later commands (`prism models`) verify the registry by the same trust file
    write_env_file(settings.env_file, read_env_file(settings.env_file) | trust)
    save_plan(home / "plan.json", services)
    scrape, _ = write_scrape_config(home, services)
    print(f"prism: Prometheus scrape config: {scrape}", file=sys.stderr)
    cmd = [sys.executable, "-m", "prism.cli", "supervise", str(home)]
    pid = process.start_detached(cmd, log_path=home / "supervisor.log", marker=MARKER, env=env)
    (home / "supervisor.pid").write_text(str(pid))
    try:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            rows = _rows(home)
            if rows and all(r["healthy"] or r["state"] == "done" for r in rows):
                break
            time.sleep(0.5)
        _print(_rows(home))
    except BaseException:  # never leave a supervisor behind that nobody knows about
        process.stop(pid, MARKER, timeout=30)
        raise
    return 0


def supervisor_env(environ: Mapping[str, str], stack: Mapping[str, str], state: Path) -> dict:
    """The supervisor's environment: the user's, the stack's addresses, and no HMAC setting
    (every service gets a key file, and the two schemes refuse to be set together)."""
    from prism.services.identities import HMAC_SETTINGS

    env = {k: v for k, v in environ.items() if k not in HMAC_SETTINGS}
    return env | dict(stack) | {"PRISM_STATE_DIR": str(state)}


def sign(services: list, directory: Path) -> dict[str, str]:
    """Give each service its key (made or reused in ``directory``) and the trust file.

    Returns the readers' setting: ``PRISM_TRUST_FILE``.
    """
    from prism.services.identities import Identity, ensure, signing_env

    signers = [Identity(s.name, tuple(s.signs_for)) for s in services if s.signs_for]
    trust = ensure(directory, signers)
    for s in services:
        s.env |= signing_env(directory, s.name if s.signs_for else None)
    return {"PRISM_TRUST_FILE": str(trust)}


def _sites(data: Path, edges: int) -> list[str]:
    from edge_agents.fleet import plan as deal
    from edge_agents.fleet import site_ids

    try:
        return [",".join(s) for _node, s in deal(site_ids(data), edges)]
    except ValueError as e:
        raise UsageError(str(e)) from e


def _supervisor_pid(home: Path) -> int | None:
    from prism.stack import process

    path = home / "supervisor.pid"
    pid = int(path.read_text()) if path.exists() else None
    return pid if process.is_alive(pid, MARKER) else None


def _health(port: int | None) -> tuple[bool, float | None]:
    """Whether /metrics answers, and the summed consumer lag it reports (if any)."""
    if port is None:
        return False, None
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except (OSError, http.client.HTTPException):  # not listening yet, or cut off mid-answer
        return False, None
    lags = re.findall(rb"^prism_consumer_lag_records\{[^}]*\} ([0-9.e+]+)$", text, re.M)
    return True, sum(float(v) for v in lags) if lags else None


def _rows(home: Path) -> list[dict]:
    from prism.services.supervisor import read_status

    rows = []
    for s in read_status(home):
        healthy, lag = _health(s["metrics_port"]) if s["state"] == "running" else (False, None)
        rows.append({**s, "healthy": healthy, "lag": lag})
    return rows


#: `prism ps --json`: the keys of each service, stable for scripts
SERVICE_KEYS = (
    "name",
    "state",
    "pid",
    "healthy",
    "restarts",
    "lag",
    "exit_code",
    "metrics_port",
    "log",
)


def service_json(row: dict) -> dict:
    return {key: row.get(key) for key in SERVICE_KEYS}


def _print(rows: list[dict]) -> None:
    print(f"{'service':<14} {'state':<9} {'pid':<8} {'healthy':<8} {'restarts':<9} {'lag':<8} log")
    for r in rows:
        lag = "-" if r["lag"] is None else f"{r['lag']:.0f}"
        healthy = "yes" if r["healthy"] else "no"
        print(
            f"{r['name']:<14} {r['state']:<9} {r['pid'] or '-':<8} {healthy:<8} "
            f"{r['restarts']:<9} {lag:<8} {r['log']}"
        )


def cmd_ps(args: argparse.Namespace, settings: Settings) -> int:
    home = home_of(settings)
    if _supervisor_pid(home) is None:
        if args.json:
            print("[]")
        print("prism: not up (run `prism up`)", file=sys.stderr)
        return 1
    rows = _rows(home)
    if args.json:
        print(json.dumps([service_json(r) for r in rows]))
    else:
        _print(rows)
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    from prism import stack
    from prism.stack import process

    home = home_of(settings)
    pid = _supervisor_pid(home)
    if pid is not None:
        process.stop(pid, MARKER, timeout=60)
    stopped = [] if args.keep_stack else stack.down(settings)
    (home / "supervisor.pid").unlink(missing_ok=True)
    print(
        f"prism: services {'stopped' if pid else 'were not running'}; "
        f"stack: stopped {', '.join(stopped) or 'nothing'}",
        file=sys.stderr,
    )
    return 0


def cmd_supervise(args: argparse.Namespace, settings: Settings) -> int:
    from prism.services.supervisor import Supervisor, load_plan

    return Supervisor(args.home, load_plan(args.home / "plan.json")).run()


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Stack health, the services of `prism up` and the registry's models on one screen."""
    from prism import stack
    from prism.commands.models import _brief, _table, _when
    from prism.commands.shadow import render_shadow, shadow_summary
    from prism.commands.stack import component_json
    from runtime.model_registry import RegistryClient, RegistryKeys

    rows = stack.status(settings)
    home = home_of(settings)
    services = _rows(home) if _supervisor_pid(home) is not None else None
    url = settings.redis_query_url or settings.redis_url
    models, shadow = None, None
    if url is not None and all(r.healthy for r in rows):
        client = RegistryClient(url.get_secret_value(), keys=RegistryKeys(settings.redis_prefix))
        models = [{"name": n} | _brief(client.get_model(n)) for n in client.models()]
        shadow = shadow_summary(client.shadow_states())
    if args.json:
        stack_rows = [component_json(r) for r in rows]
        service_rows = None if services is None else [service_json(r) for r in services]
        out = {"stack": stack_rows, "services": service_rows, "models": models, "shadow": shadow}
        print(json.dumps(out))
        return 0 if models is not None else 1
    print(
        "stack:  "
        + "   ".join(f"{r.name} {'ok' if r.healthy else 'DOWN'} ({r.address})" for r in rows)
    )
    if services is None:
        print("services: not up (`prism up` starts them)")
    else:
        print("services:")
        _print(services)
    if models is None:
        print("models: registry not reachable")
        return 1
    print(f"models: {len(models)}")
    if models:
        _table([dict(m, created_at=_when(m["created_at"])) for m in models], list(models[0]))
    if shadow:
        print("shadow (edge vs central scores of forwarded events, `prism shadow run`):")
        print("\n".join(render_shadow(shadow)))
    return 0
