"""What secure aggregation costs, set beside the clear FedAvg run of the same rounds.

Secure aggregation must not change the model: the global is clear FedAvg's
to fixed-point precision, so the two runs' metrics should agree to about
1e-6 (scores may differ in the last digits, so ROC AUC can move by a tie).
What it does cost is bytes (keys, encrypted shares, a masked uint64 vector
per node and the unmasking shares, instead of one summary record) and CPU
(key agreement, Shamir sharing, ChaCha20 masks on every node, unmasking on
the merger), and robustness: screening and the robust strategies need
individual updates, which the merger no longer sees.
"""

from __future__ import annotations

from typing import Any

from prism.compare.engine import SECURE, Run

__all__ = ["render_secure", "secure_section"]


def _per_round(total: float, rounds: int) -> float | None:
    return total / rounds if rounds else None


def secure_section(runs: dict[str, Run], archs: dict[str, Any]) -> dict[str, Any]:
    """The ``secure_agg`` block of the compare report."""
    secure, clear = runs[SECURE], runs["federated"]
    m_s, m_c = archs[SECURE]["metric"], archs["federated"]["metric"]
    return {
        "metric": m_s,
        "metric_clear_fedavg": m_c,
        "metric_diff": None if m_s is None or m_c is None else abs(m_s - m_c),
        "max_gap_to_clear_fedavg": secure.secagg_gap,
        "fixed_point_bound": secure.secagg_bound,
        "max_statistic_gap_to_clear": secure.secagg_stat_gap,
        "rounds": secure.merges,
        "rounds_clear": clear.merges,
        "updates_per_round": _per_round(secure.summaries, secure.merges),
        # per closed round, abandoned rounds' messages included
        "bytes_per_round": _per_round(secure.bytes_summaries, secure.merges),
        "bytes_per_round_clear": _per_round(clear.bytes_summaries, clear.merges),
        "cpu_ms_per_round": _per_round(1000 * secure.merge_cpu_s, secure.merges),
        "cpu_ms_per_round_clear": _per_round(1000 * clear.merge_cpu_s, clear.merges),
        "dropped_mid_round": secure.secagg_dropped,
        "abandoned_rounds": secure.secagg_abandoned,
        "abandoned_bytes": secure.secagg_wasted_bytes,
        "robust_screening": "lost: the merger sees only sums (no median, Krum or screening)",
    }


def render_secure(s: dict[str, Any]) -> list[str]:
    def f(v: Any, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    return [
        f"secure aggregation: roc_auc {f(s['metric'], '.6f')} vs clear fedavg "
        f"{f(s['metric_clear_fedavg'], '.6f')} (diff {f(s['metric_diff'], '.2g')}), "
        f"{s['rounds']} rounds vs {s['rounds_clear']} "
        f"({f(s['updates_per_round'], '.1f')} updates each), every global within "
        f"{f(s['max_gap_to_clear_fedavg'], '.2g')} of clear fedavg of its updates "
        f"(bound {f(s['fixed_point_bound'], '.2g')}; statistics within "
        f"{f(s['max_statistic_gap_to_clear'], '.2g')} x (1 + |value|))",
        f"  per round: {f(s['bytes_per_round'], ',.0f')} B vs "
        f"{f(s['bytes_per_round_clear'], ',.0f')} B (summaries), "
        f"CPU {f(s['cpu_ms_per_round'], '.1f')} ms vs "
        f"{f(s['cpu_ms_per_round_clear'], '.2f')} ms; robust screening {s['robust_screening']}",
        f"  nodes dropped mid-round {s['dropped_mid_round']} (their increments re-offered), "
        f"rounds abandoned {s['abandoned_rounds']} "
        f"({s['abandoned_bytes']:,} B, in the bytes above)",
    ]
