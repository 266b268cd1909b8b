"""`prism models list | show | history | nodes`: query the registry; `rollback | quarantine |
pin | unpin`: operator controls the merger and the edges act on (docs/merger.md)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from runtime.errors import NotFoundError, StackError, UsageError
from runtime.identity import global_verifier
from runtime.model_registry import RegistryClient, RegistryKeys
from runtime.model_registry.lifecycle import LifecycleControls
from runtime.settings import Settings
from schemas.codec import to_json_compatible


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="Query current models and nodes in Redis.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, handler, needs_name, text in (
        ("list", cmd_list, False, "Every model with its current version."),
        ("show", cmd_show, True, "One model's current version in full."),
        ("history", cmd_history, True, "Versions of one model, newest first, with lineage."),
        ("nodes", cmd_nodes, False, "Every node's last update, metrics and exclusion."),
    ):
        action = actions.add_parser(name, help=text)
        if needs_name:
            action.add_argument("name", help="model name, e.g. fraud-linear")
        action.add_argument("--json", action="store_true", help="machine-readable output")
        action.set_defaults(handler=handler)
    _register_controls(actions)


def _register_controls(actions: argparse._SubParsersAction) -> None:
    """The writes: they need a Redis user that may write the registry (PRISM_REDIS_URL)."""
    rollback = actions.add_parser(
        "rollback", help="Make an earlier version current again (the merger republishes it)."
    )
    rollback.add_argument("name", help="model name, e.g. fraud-linear")
    rollback.add_argument("--to", type=int, required=True, metavar="VERSION", help="version")
    rollback.add_argument("--reason", default="", help="recorded with the republished version")
    rollback.set_defaults(handler=cmd_rollback)
    quarantine = actions.add_parser(
        "quarantine", help="Never serve this version again (a current one is rolled back)."
    )
    quarantine.add_argument("name", help="model name, e.g. fraud-linear")
    quarantine.add_argument("version", type=int, help="the version to quarantine")
    quarantine.set_defaults(handler=cmd_quarantine)
    pin = actions.add_parser("pin", help="Keep one edge node on a global version.")
    pin.add_argument("node", help="edge node id, e.g. store-3")
    pin.add_argument("version", type=int, help="the global version it stays on")
    pin.set_defaults(handler=cmd_pin)
    unpin = actions.add_parser("unpin", help="Let a pinned edge node follow the globals again.")
    unpin.add_argument("node", help="edge node id")
    unpin.set_defaults(handler=cmd_unpin)


def _controls(settings: Settings) -> LifecycleControls:
    """Writes go with PRISM_REDIS_URL's user: the merger's (or the admin); never the query one."""
    if settings.redis_url is None:
        raise StackError("no Redis configured: run `prism stack up` or set PRISM_REDIS_URL")
    return LifecycleControls.connect(
        settings.redis_url.get_secret_value(), RegistryKeys(settings.redis_prefix)
    )


def _published(settings: Settings, name: str, version: int) -> dict[str, Any]:
    """The history record of ``version``; refused when it is not there or was held back."""
    found = [r for r in _client(settings).history(name) if r["version"] == version]
    if not found:
        raise NotFoundError(f"{name} has no version {version} in the registry history")
    if found[0].get("held_back") is not None:
        raise UsageError(f"{name} version {version} was held back, never published")
    return found[0]


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    _published(settings, args.name, args.to)
    controls = _controls(settings)
    if args.to in controls.quarantined(args.name):
        raise UsageError(f"{args.name} version {args.to} is quarantined: it is never served again")
    controls.request_rollback(args.name, args.to, args.reason)
    print(
        f"rollback of {args.name} to version {args.to} requested: the merger republishes it "
        "as the next version (see `prism models history`)"
    )
    return 0


def cmd_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    _client(settings).history(args.name)  # the model exists
    _controls(settings).quarantine(args.name, args.version)
    print(f"{args.name} version {args.version} quarantined: never served again")
    return 0


def cmd_pin(args: argparse.Namespace, settings: Settings) -> int:
    if args.version < 1:
        raise UsageError(f"global versions start at 1, got {args.version}")
    _controls(settings).pin(args.node, args.version)
    print(f"{args.node} pinned to global version {args.version}")
    return 0


def cmd_unpin(args: argparse.Namespace, settings: Settings) -> int:
    was = _controls(settings).unpin(args.node)
    print(f"{args.node} unpinned" if was else f"{args.node} was not pinned")
    return 0


def _client(settings: Settings) -> RegistryClient:
    """With PRISM_TRUST_FILE set, models are checked against the merger's public key."""
    url = settings.redis_query_url or settings.redis_url
    if url is None:
        raise StackError("no Redis configured: run `prism stack up` or set PRISM_REDIS_QUERY_URL")
    return RegistryClient(
        url.get_secret_value(),
        keys=RegistryKeys(settings.redis_prefix),
        verifier=global_verifier(settings),
    )


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _brief(record: dict[str, Any]) -> dict[str, Any]:
    state = record["state"]
    return {
        "model_name": record["model_name"],
        "version": record["version"],
        "strategy": record["strategy"],
        "created_at": record["created_at"],
        "n_samples": state["n_samples"],
        "features": len(state["features"]),
        "contributors": len(record["contributors"]),
        "excluded": len(record["excluded"]),
    }


def _emit_json(value: Any) -> None:
    print(json.dumps(to_json_compatible(value), indent=2, sort_keys=True))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    # the registry name first: a regional model ("fraud-linear@region:eu") is a fraud-linear too
    rows = []
    for name in client.models():  # an unverified model is listed as such, never hidden
        record = client.get_model(name, verify=False)
        rows.append({"name": name} | _brief(record) | {"signature": client.verdict(record)})
    if args.json:
        _emit_json(rows)
    elif not rows:
        print("no models in the registry yet")
    else:
        _table([dict(r, created_at=_when(r["created_at"])) for r in rows], list(rows[0]))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    record = client.get_model(args.name)  # UnverifiedModelError: refused, exit code 4
    if args.json:
        _emit_json(record)
        return 0
    brief = _brief(record)
    for key, value in brief.items():
        print(f"{key:<14} {_when(value) if key == 'created_at' else value}")
    print(f"{'signature':<14} {client.verdict(record)}")
    print(f"{'features':<14} {', '.join(record['state']['features'])}")
    for c in record["contributors"]:
        print(
            f"  + {c['node_id']} seq={c['sequence']} n={c['n_samples']} "
            f"staleness={c['staleness']} weight={c['weight']:.3f}"
        )
    for e in record["excluded"]:
        print(f"  - {e['node_id']} seq={e['sequence']}: {e['reason']}")
    return 0


def _holdout(record: dict[str, Any]) -> tuple[str | None, float | None]:
    """The version's holdout metric (name, value), or (None, None) when it was not scored."""
    for name in ("roc_auc", "log_loss"):
        value = record["metrics"].get(f"holdout_{name}")
        if value is not None:
            return name, value
    return None, None


def _status(record: dict[str, Any], quarantined: set[int]) -> str:
    if record.get("held_back") is not None:
        return "held-back"
    if record["version"] in quarantined:
        return "quarantined"
    if record.get("canary") is not None:  # republished with null when promoted
        return f"canary {record['canary']:g}"
    restored = record.get("restored_from")
    return "published" if restored is None else f"restores {restored}"


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    quarantined = client.quarantined(args.name)
    rows = []
    for r in client.history(args.name):
        held = r.get("held_back")
        metric, value = _holdout(r)
        rows.append(
            dict(
                _brief(r),
                status=_status(r, quarantined),
                holdout_metric=metric,
                holdout=value,
                held_back=held,
                reason=r.get("reason"),
                # a held-back version is never signed: no reader that checks keys adopts it
                signature=client.verdict(r) if held is None else "none (held back)",
                lineage=",".join(f"{c['node_id']}#{c['sequence']}" for c in r["contributors"]),
            )
        )
    if args.json:
        _emit_json(rows)
        return 0
    shown = [
        dict(
            r,
            created_at=_when(r["created_at"]),
            holdout="" if r["holdout"] is None else f"{r['holdout_metric']}={r['holdout']:.4f}",
            held_back=r["held_back"] or r["reason"] or "",
        )
        for r in rows
    ]
    columns = ["version", "status", "holdout", "created_at", "strategy", "n_samples"]
    columns += ["contributors", "excluded", "signature", "lineage", "held_back"]
    _table(shown, columns)
    return 0


def _epsilon(metrics: dict) -> str:
    """A node's DP epsilon at its delta, as its last update reported it; "-" without DP."""
    eps = metrics.get("dp_epsilon")
    if eps is None:
        return "-"
    return f"{eps:.3g} (delta {metrics.get('dp_delta', 0):.0e})"


def cmd_nodes(args: argparse.Namespace, settings: Settings) -> int:
    rows = _client(settings).nodes()
    if args.json:
        _emit_json(rows)
    elif not rows:
        print("no nodes have reported yet")
    else:
        _table(
            [
                dict(
                    r,
                    last_seen=_when(r["last_seen_ms"]),
                    worker=r["meta"].get("worker", ""),
                    epsilon=_epsilon(r["metrics"]),
                )
                for r in rows
            ],
            [
                "node_id",
                "tier",
                "region",
                "worker",
                "model_name",
                "last_sequence",
                "last_seen",
                "epsilon",
                "excluded",
                "reason",
            ],
        )
    return 0
