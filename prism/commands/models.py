"""`prism models list | show NAME | history NAME | nodes [--json]`: query the registry."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from runtime.errors import StackError
from runtime.identity import global_verifier
from runtime.model_registry import RegistryClient, RegistryKeys
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


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    rows = []
    for r in client.history(args.name):
        held = r.get("held_back")
        metric, value = _holdout(r)
        rows.append(
            dict(
                _brief(r),
                status="published" if held is None else "held-back",
                holdout_metric=metric,
                holdout=value,
                held_back=held,
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
            held_back=r["held_back"] or "",
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
