"""The windowed metric over events for each architecture, outage shaded (a PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_frontier", "write_plot"]


def write_plot(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for name, arch in report["architectures"].items():
        points = [((w["start"] + w["end"]) / 2, w["roc_auc"]) for w in arch["windowed"]]
        xs = [x for x, y in points if y is not None]
        ys = [y for _, y in points if y is not None]
        ax.plot(xs, ys, marker="o", markersize=3, label=f"{name} ({arch['metric'] or 0:.3f})")
    outage = report.get("outage")
    if outage:
        n = report["events"]
        ax.axvspan(
            outage["start"] * n,
            outage["end"] * n,
            color="grey",
            alpha=0.2,
            label=f"outage ({outage['fraction']:.0%} of sites)",
        )
    ax.set_xlabel("events")
    ax.set_ylabel("prequential ROC AUC (window)")
    ax.set_title(f"{report['model']} on {report['events']:,} events, {report['sites']} sites")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_frontier(sweep: dict[str, Any], path: Path, *, title: str = "") -> Path:
    """Metric against bytes moved (log axis): one line per architecture over the grid,
    each point labelled with its setting; centralized and local as reference marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    archs = list(sweep["points"][0]["architectures"]) if sweep["points"] else []
    for name in archs:
        pts = [
            (
                p["architectures"][name]["bytes_moved"],
                p["architectures"][name]["metric"],
                ",".join(f"{v}" for v in p["setting"].values()),
            )
            for p in sweep["points"]
            if p["architectures"][name]["metric"] is not None
        ]
        pts.sort()
        (line,) = ax.plot([b for b, _, _ in pts], [m for _, m, _ in pts], marker="o", label=name)
        for b, m, label in pts:
            ax.annotate(
                label,
                (b, m),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color=line.get_color(),
            )
    for name, f in sweep["reference"].items():
        if f["metric"] is None:
            continue
        if f["bytes_moved"] > 0:
            ax.scatter(
                [f["bytes_moved"]],
                [f["metric"]],
                marker="s",
                s=40,
                color="black",
                label=name,
                zorder=3,
            )
        else:  # nothing moves: a level to beat, not a point on a log axis
            ax.axhline(
                f["metric"], linestyle="--", linewidth=1, color="grey", label=f"{name} (0 bytes)"
            )
    ax.set_xscale("log")
    ax.set_xlabel("bytes moved (log)")
    ax.set_ylabel("prequential ROC AUC")
    axes = ", ".join(a["name"] for a in sweep["axes"])
    ax.set_title(title or f"accuracy / bytes over {axes}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
