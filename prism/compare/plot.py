"""The windowed metric over events for each architecture, outage shaded (a PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plot"]


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
        ax.axvspan(outage["start"] * n, outage["end"] * n, color="grey", alpha=0.2,
                   label=f"outage ({outage['fraction']:.0%} of sites)")  # fmt: skip
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
