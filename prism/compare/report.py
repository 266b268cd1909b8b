"""One metric code for every architecture: final and windowed metrics, bytes, outage.

Prequential: each architecture scored an event before it learned its label,
so grading every labelled event's score is the test-then-train metric. ROC
AUC is exact here (ranks over the stored scores, ties halved); F1, precision
and recall at ``threshold`` come from :class:`models.metrics.BinaryMetrics`,
the same class the services report with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.metrics import BinaryMetrics
from prism.compare.engine import SECURE, Run, SimConfig, poisoned_sites
from prism.compare.lifecycle import lifecycle_entry, render_lifecycle
from prism.compare.secure import render_secure, secure_section
from prism.compare.stream import Stream

__all__ = ["build_report", "exact_auc", "render_table"]


def exact_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney ROC AUC with ties counted half; None unless both classes occur.

    >>> exact_auc(np.array([True, False, True]), np.array([0.9, 0.5, 0.5]))
    0.75
    """
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _grade(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    m = BinaryMetrics(threshold=threshold)
    m.update_many(labels, scores)
    return {
        "roc_auc": exact_auc(labels, scores),
        "f1": m.f1,
        "precision": m.precision,
        "recall": m.recall,
        "n": int(len(labels)),
        "positives": int(labels.sum()),
    }


def _windows(stream: Stream, run: Run, windows: int, threshold: float) -> list[dict[str, Any]]:
    n = len(stream)
    edges = np.linspace(0, n, windows + 1).astype(int)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        mask = stream.labelled[lo:hi]
        graded = _grade(stream.labels[lo:hi][mask], run.scores[lo:hi][mask], threshold)
        out.append({"start": int(lo), "end": int(hi), "roc_auc": graded["roc_auc"]})
    return out


def build_report(
    stream: Stream,
    runs: dict[str, Run],
    config: SimConfig,
    *,
    threshold: float = 0.5,
    windows: int = 20,
) -> dict[str, Any]:
    mask = stream.labelled
    raw_total = int(stream.raw_bytes.sum())
    archs: dict[str, Any] = {}
    for name, run in runs.items():
        if "+" in name:  # a lifecycle run: its own section, against the plain one
            continue
        graded = _grade(stream.labels[mask], run.scores[mask], threshold)
        sources = {s: run.sources.count(s) for s in sorted(set(run.sources))}
        entry = {
            "metric": graded["roc_auc"],
            "metric_name": "roc_auc",
            "f1": graded["f1"],
            "precision": graded["precision"],
            "recall": graded["recall"],
            "bytes_moved": run.bytes_moved,
            "bytes": {
                "raw": run.bytes_raw,
                "summaries": run.bytes_summaries,
                "globals": run.bytes_globals,
            },
            "bytes_reduction_vs_centralized": (
                round(raw_total / run.bytes_moved, 1) if run.bytes_moved else None
            ),
            "merges": run.merges,
            "summaries": run.summaries,
            "poisoned_summaries": run.poisoned,
            "staleness_mean": float(np.mean(run.staleness)) if run.staleness else 0.0,
            "scores_by_source": sources,
            "windowed": _windows(stream, run, windows, threshold),
        }
        if config.outage is not None:
            entry["outage"] = _outage(stream, run, config, threshold)
        archs[name] = entry
    central = archs.get("centralized", {}).get("metric")
    for entry in archs.values():
        metric = entry["metric"]
        entry["ratio_to_centralized"] = (
            round(metric / central, 4) if metric is not None and central else None
        )
    return {
        "events": len(stream),
        "labelled": int(mask.sum()),
        "positives": int(stream.labels[mask].sum()),
        "sites": len(stream.site_names),
        "record_type": stream.record_type,
        "model": config.spec_name,
        "strategy": config.strategy,
        "summary_every": config.summary_every,
        "seed": config.seed,
        "threshold": threshold,
        "outage": None if config.outage is None else vars(config.outage),
        "poison": _poison(stream, config),
        "architectures": archs,
        "secure_agg": secure_section(runs, archs) if SECURE in runs else None,
        "lifecycle": _lifecycle(stream, runs, archs, config),
    }


def _lifecycle(
    stream: Stream, runs: dict[str, Run], archs: dict[str, Any], config: SimConfig
) -> dict[str, Any] | None:
    """``--quality-gate`` / ``--canary``: each lifecycle run against its plain architecture."""
    lc = config.lifecycle
    if not lc.active:
        return None
    from models.canary import in_canary

    mask = stream.labelled
    section: dict[str, Any] = {
        "quality_gate": lc.quality_gate,
        "gate_min_events": lc.gate_min_events,
        "holdout_size": lc.holdout_size,
        "canary": lc.canary,
        "canary_margin": lc.canary_margin,
        "canary_min_events": lc.canary_min_events,
        "canary_sites": [s for s in stream.site_names if lc.canary and in_canary(s, lc.canary)],
        "architectures": {},
    }
    for name, run in runs.items():
        arch, _, variant = name.partition("+")
        if not variant:
            continue
        metric = exact_auc(stream.labels[mask], run.scores[mask])
        entry = lifecycle_entry(run, archs[arch], metric)
        section["architectures"].setdefault(arch, {})[variant] = entry
    return section


def _outage(stream: Stream, run: Run, config: SimConfig, threshold: float) -> dict[str, Any]:
    assert config.outage is not None
    n = len(stream)
    start, end = int(config.outage.start * n), int(config.outage.end * n)
    out: dict[str, Any] = {
        "scored_disconnected": run.scored_disconnected,
        "merges_during": run.merges_during_outage,
    }
    for part, (lo, hi) in {"during": (start, end), "after": (end, n)}.items():
        mask = stream.labelled[lo:hi]
        out[f"metric_{part}"] = _grade(
            stream.labels[lo:hi][mask], run.scores[lo:hi][mask], threshold
        )["roc_auc"]
    return out


def _poison(stream: Stream, config: SimConfig) -> dict[str, Any] | None:
    if config.poison is None:
        return None
    sites = sorted(poisoned_sites(stream, config))
    n = len(stream.site_names)
    return vars(config.poison) | {
        "scale": config.poison.strength(n),  # the factor applied (the kind's default if unset)
        "sites": [stream.site_names[i] for i in sites],
    }


def _factor(kind: str, scale: float) -> str:
    """How the attack's strength reads: alie's z, ipm's epsilon, a factor otherwise."""
    if kind == "excluded":
        return "(set aside by a perfect screen: the floor)"
    name = {"alie": "z=", "ipm": "epsilon="}.get(kind, "x")
    return f"{name}{scale:.3g}"


def render_table(report: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ".4f") -> str:
        return "-" if v is None else format(v, spec)

    head = " ".join(
        [
            f"{'architecture':<16}",
            f"{'roc_auc':>8}",
            f"{'ratio':>7}",
            f"{'f1':>7}",
            f"{'precision':>9}",
            f"{'recall':>7}",
            f"{'bytes_moved':>13}",
            f"{'x_less':>8}",
            f"{'merges':>7}",
            f"{'stale':>6}",
        ]
    )
    lines = [
        f"{report['events']:,} events ({report['labelled']:,} labelled, "
        f"{report['positives']:,} positive), {report['sites']} sites, model {report['model']}, "
        f"strategy {report['strategy']}, summary every {report['summary_every']}",
        head,
        "-" * len(head),
    ]
    for name, a in report["architectures"].items():
        lines.append(
            f"{name:<16} {f(a['metric']):>8} {f(a['ratio_to_centralized'], '.3f'):>7} "
            f"{f(a['f1']):>7} {f(a['precision']):>9} {f(a['recall']):>7} "
            f"{a['bytes_moved']:>13,} {f(a['bytes_reduction_vs_centralized'], ',.1f'):>8} "
            f"{a['merges']:>7} {a['staleness_mean']:>6.2f}"
        )
    if report.get("poison") is not None:
        p = report["poison"]
        sites = ", ".join(p["sites"])
        lines.insert(
            1,
            f"poisoned: {len(p['sites'])} sites ({sites}) send {p['kind']} updates "
            f"{_factor(p['kind'], p['scale'])} under strategy {report['strategy']}",
        )
    if report.get("secure_agg") is not None:
        lines += render_secure(report["secure_agg"])
    if report.get("lifecycle") is not None:
        lines += render_lifecycle(report["lifecycle"])
    if report["outage"] is not None:
        for name, a in report["architectures"].items():
            o = a["outage"]
            lines.append(
                f"outage {name:<12} during {f(o['metric_during'])} after {f(o['metric_after'])}"
                f" cut-off scores {o['scored_disconnected']:,} merges during {o['merges_during']}"
            )
    return "\n".join(lines)
