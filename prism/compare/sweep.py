"""The accuracy/bytes frontier: `prism compare --sweep NAME=V1,V2,...` (repeatable: a grid).

Each grid point is one simulation of the architectures that move summaries
(federated, hybrid) with that point's settings; centralized and local do not
depend on any sweepable setting, so they run once, at the base flags, and
stand as the frontier's reference points. Every figure comes from the same
engine and report code as a single `prism compare`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from models.serialization import QUANTIZE
from prism.compare.engine import SimConfig, simulate
from prism.compare.report import build_report
from prism.compare.stream import Stream

__all__ = ["SWEEPABLE", "parse_sweeps", "render_sweep", "run_sweep"]

FRONTIER = ("federated", "hybrid")  # what a sweepable setting changes
REFERENCE = ("centralized", "local")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not >= 1")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{value} is not in [0, 1]")
    return value


def _open_share(text: str) -> float:
    """A share in [0, 1): a personal model pulled all the way would be the global."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{value} is not in [0, 1)")
    return value


def _quantize(text: str) -> str:
    if text not in QUANTIZE:
        raise ValueError(f"{text!r} is not one of {', '.join(q for q in QUANTIZE if q)}")
    return text


def _deltas(text: str) -> str | None:
    return None if text == "off" else _quantize(text)


#: flag name -> (SimConfig field, parse one value)
SWEEPABLE: dict[str, tuple[str, Callable[[str], Any]]] = {
    "summary-every": ("summary_every", _positive_int),
    "round-size": ("round_size", _positive_int),
    "round-timeout-ms": ("round_timeout_ms", _positive_int),
    "quantize": ("quantize", _quantize),
    "deltas": ("deltas", _deltas),
    "forward-sample": ("forward_sample", _share),
    "min-move": ("min_move", _share),
    "personal-pull": ("personal_pull", _open_share),
    "blend-alpha": ("blend_alpha", _share),
    "strategy": ("strategy", str),
}


def parse_sweeps(texts: list[str]) -> list[tuple[str, list[Any]]]:
    """``["summary-every=50,200", "quantize=float32,float16"]`` -> the grid's axes.

    Raises ValueError with the flag's own words for anything else.
    """
    axes: list[tuple[str, list[Any]]] = []
    for text in texts:
        name, sep, values = text.partition("=")
        name = name.strip().removeprefix("--")
        if not sep or name not in SWEEPABLE:
            raise ValueError(
                f"--sweep {text!r}: use NAME=V1,V2,... with NAME one of {', '.join(SWEEPABLE)}"
            )
        if name in (n for n, _ in axes):
            raise ValueError(f"--sweep: {name} given twice")
        parse = SWEEPABLE[name][1]
        try:
            parsed = [parse(v.strip()) for v in values.split(",") if v.strip()]
        except ValueError as e:
            raise ValueError(f"--sweep {name}: {e}") from e
        if not parsed:
            raise ValueError(f"--sweep {name}: no values")
        axes.append((name, parsed))
    return axes


def _figures(report: dict[str, Any], names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    archs = report["architectures"]
    return {
        n: {
            "metric": archs[n]["metric"],
            "bytes_moved": archs[n]["bytes_moved"],
            "reduction": archs[n]["bytes_reduction_vs_centralized"],  # raw stream / bytes moved
        }
        for n in names
        if n in archs
    }


def run_sweep(
    stream: Stream,
    config: SimConfig,
    axes: list[tuple[str, list[Any]]],
    *,
    threshold: float = 0.5,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Every grid point's metric and bytes per architecture, and the reference points."""
    reference_archs = tuple(a for a in config.architectures if a in REFERENCE)
    frontier_archs = tuple(a for a in config.architectures if a in FRONTIER)
    if not frontier_archs:
        raise ValueError("--sweep needs federated or hybrid among --architectures")
    reference: dict[str, dict[str, Any]] = {}
    if reference_archs:
        runs = simulate(stream, replace(config, architectures=reference_archs), progress)
        report = build_report(stream, runs, config, threshold=threshold, windows=1)
        reference = _figures(report, reference_archs)
    points = []
    for values in itertools.product(*(v for _, v in axes)):
        setting = dict(zip((n for n, _ in axes), values, strict=True))
        changes = {SWEEPABLE[n][0]: v for n, v in setting.items()}
        point = replace(config, architectures=frontier_archs, **changes)
        runs = simulate(stream, point, progress)
        report = build_report(stream, runs, point, threshold=threshold, windows=1)
        points.append({"setting": setting, "architectures": _figures(report, frontier_archs)})
    return {
        "axes": [{"name": n, "values": v} for n, v in axes],
        "reference": reference,
        "points": points,
    }


def render_sweep(sweep: dict[str, Any]) -> str:
    """A plain table: one row per grid point, metric / bytes / reduction per architecture."""
    names = [a["name"] for a in sweep["axes"]]
    archs = list(sweep["points"][0]["architectures"]) if sweep["points"] else []
    head = "  ".join(f"{n:>16}" for n in names) + "".join(
        f"  {a + ' metric':>16} {'bytes':>12} {'x fewer':>8}" for a in archs
    )
    lines = [head]
    for p in sweep["points"]:
        row = "  ".join(f"{p['setting'][n]!s:>16}" for n in names)
        for a in archs:
            f = p["architectures"][a]
            metric = "n/a" if f["metric"] is None else f"{f['metric']:.4f}"
            red = "" if f["reduction"] is None else f"{f['reduction']:.1f}"
            row += f"  {metric:>16} {f['bytes_moved']:>12,} {red:>8}"
        lines.append(row)
    for name, f in sweep["reference"].items():
        metric = "n/a" if f["metric"] is None else f"{f['metric']:.4f}"
        lines.append(f"{name}: {metric} at {f['bytes_moved']:,} bytes")
    return "\n".join(lines)
