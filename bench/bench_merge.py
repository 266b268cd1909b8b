"""Merge time per strategy: 1,000 updates x 1,000 features, measured in one run.

    python bench/bench_merge.py

Prints best-of-3 wall time per strategy and its ratio to FedAvg (the machine
is shared and noisy: compare ratios, not absolute times), then the encoded
size of one vector in each wire dtype. Goal: FedAvg under 100 ms.
"""

from __future__ import annotations

import time

import numpy as np

from models.quantize import quantize
from models.strategies import Update, get_strategy

N_UPDATES, DIM, REPEATS = 1_000, 1_000, 3
STRATEGIES = ("fedavg", "fedmedian", "trimmed:0.1", "multikrum:f=10,m=20", "fedadam", "async")


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    updates = [
        Update(f"n{i}", 1, rng.normal(0, 1, DIM), int(rng.integers(10, 1000)),
               staleness=int(rng.integers(0, 4)))
        for i in range(N_UPDATES)
    ]  # fmt: skip
    current = np.zeros(DIM)
    print(f"{N_UPDATES} updates x {DIM} features, best of {REPEATS}")
    print(f"{'strategy':<22} {'ms':>9} {'x fedavg':>9}")
    get_strategy("fedavg").aggregate(updates, current)  # warm-up: page in the matrices
    baseline = None
    for name in STRATEGIES:
        strategy = get_strategy(name)
        seconds = best_of(lambda s=strategy: s.aggregate(updates, current))
        baseline = baseline or seconds
        print(f"{name:<22} {seconds * 1e3:9.1f} {seconds / baseline:9.2f}")
    screened = get_strategy("fedavg", screen=True)
    seconds = best_of(lambda: screened.aggregate(updates, current))
    print(f"{'fedavg+screening':<22} {seconds * 1e3:9.1f} {seconds / baseline:9.2f}")
    print("\nbytes of one learned vector on the wire (data only)")
    vector = rng.normal(0, 1, DIM)
    for n in (DIM, 31):
        sizes = {d: len(quantize(vector[:n], d).to_bytes()) for d in ("float64", "float16", "int8")}
        print(f"  {n:>5} values: " + ", ".join(f"{d}={b} B" for d, b in sizes.items()))
    q8 = quantize(vector, "int8")
    err8 = np.abs(q8.zero + q8.scale * q8.data.astype(float) - vector).max()
    half = quantize(vector, "float16").data.astype(float)
    err16, rel16 = np.abs(half - vector).max(), np.max(np.abs(half - vector) / np.abs(vector))
    print(f"  max error on N(0,1), 1,000 values: float16 {err16:.2e} (relative {rel16:.1e}), "
          f"int8 {err8:.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
