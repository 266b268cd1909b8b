"""How fast do exact merges fold a round, and how big is a summary on the wire?

Not a test: prints best-of-3 wall times and sizes measured in this run.

- exact scaler merge: 1,000 summaries x 1,000 features (Chan, k-way);
- exact Gaussian merge: 1,000 summaries x 30 features (a 30 x 30
  covariance each -- 1,000 features would mean 1,000 x 1,000 matrices, not
  a sensor model);
- HST mass merge: 1,000 summaries of the iot-hst trees (10 x 63 nodes);
- full ``merge(...)`` of 1,000 fraud-linear summaries (validation, alignment,
  FedAvg over the learned vector, exact scaler merge), at 30 and 1,000
  features;
- encoded size of one summary (``summary_to_state`` + fastavro schemaless
  writer), float64 / float16 / int8, against the raw events behind it.

Run: ``.venv/bin/python bench/bench_exact_merge.py``
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import fastavro
import numpy as np

from models.exact import merge_covariances, merge_masses, merge_moments
from models.merge import merge
from models.serialization import summary_to_state
from models.specs import get_spec
from models.summary import Summary

K = 1_000
GOAL_MS = 100.0
ROOT = Path(__file__).resolve().parents[1]


def best_of_3(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def report(label: str, ms: float, goal: float | None = GOAL_MS) -> None:
    verdict = "" if goal is None else (" ok" if ms < goal else f" OVER the {goal:.0f} ms goal")
    print(f"{label:<58} {ms:9.2f} ms{verdict}")


def linear_summaries(d: int, rng: np.random.Generator) -> list[Summary]:
    spec = get_spec("fraud-linear")
    features = tuple(f"f{j:04d}" for j in range(d))
    out = []
    for i in range(K):
        n = int(rng.integers(100, 10_000))
        tensors = {
            "count": np.full(d, n, dtype=np.int64),
            "mean": rng.normal(size=d),
            "var": rng.uniform(0.5, 2.0, size=d),
            "weights": rng.normal(size=d),
            "intercept": rng.normal(size=1),
        }
        out.append(
            Summary(
                spec.name,
                spec.kind,
                features,
                n,
                tensors,
                spec.params,
                node_id=f"node-{i}",
                sequence=1,
            )
        )
    return out


def encoded_size(summary: Summary, quantize: str | None = None) -> int:
    schema = json.loads((ROOT / "schemas" / "avro" / "WeightSummary.avsc").read_text())
    state_schema = next(f["type"] for f in schema["fields"] if f["name"] == "state")
    buffer = io.BytesIO()
    fastavro.schemaless_writer(
        buffer, fastavro.parse_schema(state_schema), summary_to_state(summary, quantize)
    )
    return len(buffer.getvalue())


def bench_exact(rng: np.random.Generator) -> None:
    d = 1_000
    counts = rng.integers(0, 10_000, size=(K, d))
    means, variances = rng.normal(size=(K, d)), rng.uniform(0, 2, size=(K, d))
    report(
        f"exact scaler merge   {K} x {d} features",
        best_of_3(lambda: merge_moments(counts, means, variances)),
    )
    p = 30
    a = rng.normal(size=(K, p, p))
    covs = np.einsum("kij,klj->kil", a, a) / p
    n, mu = rng.integers(1, 10_000, size=K), rng.normal(size=(K, p))
    report(
        f"exact gauss merge    {K} x {p} features (30x30 cov)",
        best_of_3(lambda: merge_covariances(n, mu, covs)),
    )
    masses = rng.integers(0, 250, size=(K, 10, 63))
    report(
        f"HST mass merge       {K} x 10 trees x 63 nodes", best_of_3(lambda: merge_masses(masses))
    )


def bench_full_merge(rng: np.random.Generator) -> None:
    for d in (30, 1_000):
        parts = linear_summaries(d, rng)
        report(
            f"merge(..., 'fedavg') {K} fraud-linear x {d} features",
            best_of_3(lambda parts=parts: merge(parts, "fedavg")),
            goal=None,
        )


def learned_summary(name: str, n: int = 5_000) -> tuple[Summary, int, int]:
    """A spec's summary after ``n`` synthetic events; raw bytes = 8 per value."""
    spec = get_spec(name)
    d = 30 if spec.task == "fraud" else 8
    rng = np.random.default_rng(1)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, d) + rng.uniform(-10, 10, d)
    y = rng.random(n) < 0.05
    model = spec.new_model()
    names = [f"f{j:02d}" for j in range(d)]
    for row, label in zip(X.tolist(), y.tolist(), strict=True):
        spec.learn_one(model, dict(zip(names, row, strict=True)), label)
    return spec.summarize(model), n * d * 8, n


def bench_sizes() -> None:
    for name in ("fraud-linear", "iot-hst", "iot-gauss"):
        summary, raw_bytes, n = learned_summary(name)
        for q in (None, "float16", "int8"):
            size = encoded_size(summary, q)
            print(
                f"{name:<13} {str(q or 'float64'):<8} {len(summary.features):>3} features: "
                f"{size:7d} B  ({raw_bytes / size:6.0f}x smaller than its {n} raw events)"
            )


if __name__ == "__main__":
    generator = np.random.default_rng(0)
    bench_exact(generator)
    bench_full_merge(generator)
    bench_sizes()
