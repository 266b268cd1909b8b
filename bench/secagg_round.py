"""What one SecAgg+ round costs as it grows: bytes and CPU, sparse graph vs complete.

Not a test: prints figures measured in this run. Every node's and the
server's work runs in this one process (real X25519, HKDF, Shamir,
ChaCha20-Poly1305 and ChaCha20 masks), so CPU per node is the total divided
by the node count. The vector is a fraud-linear update with 10 features
(5 x 10 + 3 values, two 64-bit words each), or with ``--spec iot-gauss`` an
iot-gauss one (d + d(d+1)/2 + 1 values: sums, second moments' upper
triangle, count) over ``--features`` sensors. ``complete`` is plain SecAgg
(Bonawitz et al. 2017: every pair shares); ``secagg+`` is the O(log n)
neighbour graph of Bell et al. 2020.

A sparse graph tolerates ``max_dropout`` per *neighbourhood*: 20 % dropped
overall can be more than 30 % of one node's 20 neighbours, and then the
round is abandoned (Bell et al. size ``k`` so this is rare; the default
degree here is smaller). The ``outcome`` column shows it.

Run: ``.venv/bin/python bench/secagg_round.py [--spec iot-gauss --features 6]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from models.secagg.fixedpoint import FixedPoint
from models.secagg.layout import LAYOUTS
from models.secagg.messages import RoundSpec
from models.secagg.round import Dropouts, run_round

FP = FixedPoint()


def measure(n: int, degree: int | None, drop: float, values: int) -> tuple[int, float, int, str]:
    ids = [f"site-{i:03d}" for i in range(n)]
    spec = RoundSpec.create(f"bench-{n}", ids, FP.width(values), degree=degree)
    rng = np.random.default_rng(n)
    inputs = {v: FP.encode(rng.normal(size=values)) for v in ids}
    gone = Dropouts({"input": ids[: int(drop * n)]})
    start = time.process_time()
    outcome, cost = run_round(spec, inputs, gone)
    cpu = time.process_time() - start
    status = "abandoned" if hasattr(outcome, "reason") else "unmasked"
    return cost.total, cpu, spec.graph.degree, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="fraud-linear", choices=sorted(LAYOUTS))
    parser.add_argument("--features", type=int, default=10)
    args = parser.parse_args()
    values = LAYOUTS[args.spec].size(args.features)  # fraud-linear: 5 d + 3
    print(f"{args.spec}, {args.features} features: {values} values a node")
    print(f"{'nodes':>5} {'graph':>9} {'degree':>6} {'dropped':>7} {'bytes/node':>11} "
          f"{'cpu ms/node':>11} {'outcome':>9}")  # fmt: skip
    for n in (10, 25, 50, 100):
        for name, degree in (("secagg+", None), ("complete", n - 1)):
            for drop in (0.0, 0.2):
                total, cpu, k, status = measure(n, degree, drop, values)
                print(f"{n:>5} {name:>9} {k:>6} {drop:>7.0%} {total / n:>11,.0f} "
                      f"{1000 * cpu / n:>11.2f} {status:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
