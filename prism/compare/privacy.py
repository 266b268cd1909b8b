"""`prism compare --dp-epsilon 1,4,8`: what differential privacy costs in accuracy.

For each ε the federated and hybrid architectures run again, their sites'
increments clipped to ``--dp-clip`` and noised as `prism edge run --dp-clip
--dp-noise` does (:meth:`edge_agents.learner.EdgeLearner.cut`). One noise
multiplier σ serves every site: the smallest that keeps the busiest site --
the one that publishes the most summaries -- within ε at ``--dp-delta``
(:func:`models.privacy.noise_multiplier_for`); sites that publish less spend
less. How many summaries a site publishes is read off the log: its labelled
events (what it learns) on the summary cadence, sooner at first
(:func:`edge_agents.learner.cuts_over`; in the simulation nothing else cuts).
ε is also every site's budget (``--dp-epsilon-budget``), so a site that would
publish more than counted stops instead of overspending. The accountant is
the edge's own (RDP, no subsampling amplification: an upper bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge_agents.learner import cuts_over
from models.privacy import epsilon_for, noise_multiplier_for
from prism.compare.engine import SimConfig, simulate
from prism.compare.report import build_report
from prism.compare.stream import Stream

__all__ = [
    "DP_ARCHITECTURES",
    "Calibration",
    "calibrate",
    "calibrate_rounds",
    "parse_epsilons",
    "render_privacy",
    "run_privacy",
]

DP_ARCHITECTURES = ("federated", "hybrid")  # the architectures whose sites publish updates
ASSUMPTION = (
    "sites publish on the event cadence only (summary-every, sooner at first); "
    "rounds = the busiest site's summaries over the log; one sigma for every site"
)


@dataclass(frozen=True)
class Calibration:
    epsilon: float
    delta: float
    rounds: int  # summaries the busiest site publishes over the log
    noise_multiplier: float

    @property
    def achieved(self) -> float:
        """ε the busiest site spends at this σ: never above the requested one."""
        return epsilon_for(self.noise_multiplier, self.delta, self.rounds)


def parse_epsilons(text: str) -> tuple[float, ...]:
    """``"1,4,8"`` -> (1.0, 4.0, 8.0); each must be a finite number > 0.

    >>> parse_epsilons("1, 4,8")
    (1.0, 4.0, 8.0)
    """
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise ValueError(f"--dp-epsilon takes numbers like 1,4,8, got {text!r}") from e
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"--dp-epsilon values must be > 0, got {text!r}")
    return values


def site_rounds(stream: Stream, summary_every: int) -> list[int]:
    """Summaries each site publishes over the log: its labelled events on the cadence."""
    learned = np.bincount(stream.sites[stream.labelled], minlength=len(stream.site_names))
    return [cuts_over(int(n), summary_every) for n in learned]


def calibrate(stream: Stream, config: SimConfig, epsilon: float) -> Calibration:
    """The σ that keeps the busiest site within ``epsilon`` at ``config.dp_delta``."""
    return calibrate_rounds(
        epsilon, config.dp_delta, max([*site_rounds(stream, config.summary_every), 1])
    )


def calibrate_rounds(epsilon: float, delta: float, rounds: int) -> Calibration:
    """The smallest σ whose ``rounds`` releases spend at most ``epsilon`` at ``delta``."""
    sigma = noise_multiplier_for(epsilon, delta, rounds)
    while epsilon_for(sigma, delta, rounds) > epsilon:  # float rounding: never over
        sigma = float(np.nextafter(sigma, np.inf))
    return Calibration(epsilon, delta, rounds, sigma)


def run_privacy(
    stream: Stream,
    config: SimConfig,
    epsilons: Sequence[float],
    baseline: dict[str, Any],
    *,
    clip: float,
    threshold: float = 0.5,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The report's ``privacy`` entry: per ε, σ, ε spent, and each architecture's metric
    and bytes against ``baseline`` (the report's ``architectures``, run without DP)."""
    archs = tuple(a for a in config.architectures if a in DP_ARCHITECTURES)
    if not archs:
        raise ValueError("--dp-epsilon needs federated or hybrid in --architectures")
    levels = []
    for eps in epsilons:
        cal = calibrate(stream, config, eps)
        private = replace(
            config,
            architectures=archs,
            dp_clip=clip,
            dp_noise=cal.noise_multiplier,
            dp_epsilon_budget=eps,
        )
        runs = simulate(stream, private, progress)
        graded = build_report(stream, runs, private, threshold=threshold, windows=1)
        rows = {}
        for name, run in runs.items():
            metric, plain = graded["architectures"][name]["metric"], baseline[name]["metric"]
            rows[name] = {
                "metric": metric,
                "metric_no_dp": plain,
                "cost": None if metric is None or plain is None else plain - metric,
                "bytes_moved": run.bytes_moved,
                "summaries": run.summaries,
                "epsilon_spent": run.dp_epsilon,
                "releases_max": run.dp_releases,
            }
        spent = [r["epsilon_spent"] for r in rows.values() if r["epsilon_spent"] is not None]
        levels.append(
            {
                "epsilon": eps,
                "noise_multiplier": cal.noise_multiplier,
                "rounds": cal.rounds,
                "epsilon_calibrated": cal.achieved,
                "epsilon_spent": max(spent, default=0.0),
                "architectures": rows,
            }
        )
    return {
        "delta": config.dp_delta,
        "clip": clip,
        "summary_every": config.summary_every,
        "assumption": ASSUMPTION,
        "epsilons": levels,
    }


def render_privacy(privacy: dict[str, Any]) -> list[str]:
    """The table's privacy rows: metric with and without DP, and the cost, per ε."""

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [
        f"privacy: clip {privacy['clip']:g}, delta {privacy['delta']:g}, "
        f"sigma for the busiest site's summaries ({privacy['assumption']})",
        f"{'epsilon':>8} {'sigma':>8} {'rounds':>6} {'spent':>7}  {'architecture':<12} "
        f"{'roc_auc':>8} {'no_dp':>8} {'cost':>8} {'bytes_moved':>13}",
    ]
    for level in privacy["epsilons"]:
        for name, a in level["architectures"].items():
            lines.append(
                f"{level['epsilon']:>8g} {level['noise_multiplier']:>8.3f} {level['rounds']:>6} "
                f"{level['epsilon_spent']:>7.3f}  {name:<12} {f(a['metric']):>8} "
                f"{f(a['metric_no_dp']):>8} {f(a['cost']):>8} {a['bytes_moved']:>13,}"
            )
    return lines
