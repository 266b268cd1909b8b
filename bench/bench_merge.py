"""Merge time per strategy and summary size per encoding, measured in one run.

    .venv/bin/python bench/bench_merge.py

Merges 1,000 updates of 1,000 features with every strategy in
``STRATEGY_NAMES`` (plus FedAvg with screening and with DP), each from a
current global vector so the server optimizers and the async mix take their
step. Prints the best of 3 wall times (``time.perf_counter``) and the ratio
to FedAvg: the machine is shared and noisy, so compare ratios, not absolute
times. Goal: FedAvg under 100 ms.

Then the bytes of one learned vector per wire dtype: the tensor data alone
and a whole Avro ``WeightSummary`` message (single-object encoding, feature
names included), for 1,000 features and for a fraud-linear-like vector
(30 weights + intercept), with the quantization error measured on the same
N(0, 1) values.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from models.quantize import dequantize, quantize
from models.strategies import STRATEGY_NAMES, NodeVector, get_strategy
from schemas.codec import Codec

N_UPDATES, DIM, REPEATS = 1_000, 1_000, 3
DTYPES = ("float64", "float32", "float16", "int8")
VARIANTS = {"fedavg+screen": ("fedavg", {"screen": True})}
VARIANTS["fedavg+dp"] = ("fedavg", {"clip_norm": 1.0, "noise_multiplier": 1.0, "seed": 0})


def best_of(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def a_round(rng: np.random.Generator) -> list[NodeVector]:
    return [
        NodeVector(
            f"n{i:04d}",
            1,
            rng.normal(0, 1, DIM),
            int(rng.integers(10, 1000)),
            staleness=int(rng.integers(0, 4)),
        )
        for i in range(N_UPDATES)
    ]


def bench_strategies(updates: list[NodeVector], current: np.ndarray) -> None:
    print(f"merge: {N_UPDATES} updates x {DIM} features, best of {REPEATS}")
    print(f"  {'strategy':<20} {'ms':>9} {'x fedavg':>9}  excluded")
    get_strategy("fedavg").aggregate(updates, current)  # warm-up: page in the arrays
    runs = {name: (name, {}) for name in STRATEGY_NAMES} | VARIANTS
    baseline = 0.0
    for label, (spec, options) in runs.items():
        strategy = get_strategy(spec, **options)
        seconds = best_of(lambda s=strategy: s.aggregate(updates, current))
        baseline = baseline or seconds
        excluded = len(strategy.aggregate(updates, current).excluded)
        print(f"  {label:<20} {seconds * 1e3:9.1f} {seconds / baseline:9.2f}  {excluded}")


def message_bytes(codec: Codec, values: np.ndarray, dtype: str) -> int:
    q = quantize(values, dtype)
    tensor = {"name": "weights", "dtype": dtype, "shape": list(q.shape)}
    tensor |= {"data": q.to_bytes(), "scale": q.scale, "zero": q.zero}
    state = {"model_name": "fraud-linear", "model_kind": "linear", "n_samples": 10_000}
    state |= {"features": [f"f{i}" for i in range(values.size)], "tensors": [tensor]}
    record = {"node_id": "edge-001", "tier": "edge", "region": None, "sequence": 1}
    record |= {"base_version": 1, "created_at": 1_700_000_000_000, "state": state}
    return len(codec.encode("WeightSummary", record))


def bench_sizes(rng: np.random.Generator) -> None:
    codec = Codec("avro")
    print("\nsize of one learned vector: tensor data / whole WeightSummary message (bytes)")
    print(f"  {'values':>7}  " + "  ".join(f"{d:>15}" for d in DTYPES))
    for n in (DIM, 31):
        values = rng.normal(0, 1, n)
        cells = [
            f"{len(quantize(values, d).to_bytes()):>6} / {message_bytes(codec, values, d):>6}"
            for d in DTYPES
        ]
        print(f"  {n:>7}  " + "  ".join(f"{c:>15}" for c in cells))
    values = rng.normal(0, 1, DIM)
    print("\nquantization error on N(0,1), 1,000 values")
    for dtype in DTYPES[1:]:
        q = quantize(values, dtype)
        error = np.abs(dequantize(q) - values)
        extra = f"  (scale/2 = {q.scale / 2:.2e})" if dtype == "int8" else ""
        relative = np.max(error / np.abs(values))
        print(f"  {dtype:<8} max abs {error.max():.2e}  max rel {relative:.2e}{extra}")


def main() -> None:
    rng = np.random.default_rng(0)
    updates = a_round(rng)
    bench_strategies(updates, current=rng.normal(0, 0.1, DIM))
    bench_sizes(rng)


if __name__ == "__main__":
    main()
