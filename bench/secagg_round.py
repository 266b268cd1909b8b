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

The second table is what one node *downloads* of a round on Kafka: the
merger's SecAggRound records, Avro-encoded and signed (Ed25519) as the
merger writes them (the survivors' confirmations signed too), from a round
driven through the merger's state machine (streams/merger/secure.py) with
real nodes. ``one record`` is every record of the round in ``secagg-rounds``
with the routed ciphertexts of all receivers in one ``input`` record, which
every node fetched; ``own partition`` is the round-wide records plus the
node's own ``input`` record on ``secagg-routed`` (a partition per node);
``P=32`` adds the records of the nodes whose id hashes to the same
partition of 32 (the default), averaged over the nodes.

Run: ``.venv/bin/python bench/secagg_round.py [--spec iot-gauss --features 6] [--nodes 10 100]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from models.secagg.fixedpoint import FixedPoint
from models.secagg.layout import LAYOUTS
from models.secagg.messages import Advertise, RoundSpec
from models.secagg.node import Node, NodeKeys
from models.secagg.round import Dropouts, run_round
from runtime.secagg import (
    confirm_record,
    keys_record,
    masked_record,
    routed_partition,
    routed_to,
    shares_record,
    unmask_record,
)
from schemas import Codec
from schemas.identity import KeySigner, generate_private_key
from streams.merger.secure import SecureConfig, SecureRounds

FP = FixedPoint()
CODEC = Codec()


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


def kafka_download(n: int, model: str, features: int, partitions: int = 32
                   ) -> tuple[float, float, float]:  # fmt: skip
    """Bytes one node downloads of a round: (one input record for all, own partition, P=32)."""
    ids = [f"site-{i:03d}" for i in range(n)]
    feats = [f"f{j}" for j in range(features)]
    rounds = SecureRounds(
        SecureConfig(model_name=model, round_size=n, keys_timeout_s=1, step_timeout_s=1),
        current=lambda _m: None, merged_before=lambda _n, _s: False,
    )  # fmt: skip
    signer = KeySigner("merger-k1", generate_private_key())
    node_keys = {v: generate_private_key() for v in ids}  # their confirmations travel down
    keys = {v: NodeKeys.generate() for v in ids}
    nodes: dict[str, Node] = {}
    rng = np.random.default_rng(n)
    now = 1
    rid = rounds.open(now)

    def take(contract: str, record: dict) -> None:
        rounds.take(contract, record, None, 0, now)

    ads = {v: Advertise(v, k.cipher.public, k.mask.public) for v, k in keys.items()}
    for v in ids:
        take("SecAggKeys", keys_record(rid, ads[v], model_name=model, sequence=1,
                                       base_version=0, features=feats, now_ms=now))  # fmt: skip
    rounds.advance(now)
    shares = rounds.out[-1]
    for v in ids:
        spec = RoundSpec.create(rid, ids, shares["length"], max_dropout=shares["max_dropout"])
        nodes[v] = Node(v, spec, keys=keys[v])
        take("SecAggShares", shares_record(rid, nodes[v].share(ads), now))
    rounds.advance(now)
    own = {routed_to(r): r for r in rounds.out if r["phase"] == "input"}
    for v in ids:
        vector = rng.integers(0, 2**63, size=shares["length"], dtype=np.uint64)
        masked = nodes[v].masked_input(vector, own[v]["routed"][v])
        take("SecAggMasked", masked_record(rid, masked, now))
    rounds.advance(now)
    survivors = rounds.out[-1]["nodes"]
    for v in ids:
        nodes[v].confirm(survivors)
        confirm = dict(confirm_record(rid, v, survivors, now), key_id=None, signature=None)
        take("SecAggConfirm", KeySigner(f"{v}-k1", node_keys[v]).sign(confirm, "SecAggConfirm"))
    rounds.advance(now)
    for v in ids:
        take("SecAggUnmask", unmask_record(rid, nodes[v].unmask(survivors), now))
    finished = rounds.advance(now)
    assert finished is not None, "the bench round did not unmask"
    rounds.done(finished, 1, now)

    def size(record: dict) -> int:
        signed = signer.sign(dict(record, key_id=None, signature=None), "SecAggRound")
        return len(CODEC.encode("SecAggRound", signed))

    wide = sum(size(r) for r in rounds.out if routed_to(r) is None)
    mine = {v: size(r) for v, r in own.items()}
    first = next(iter(own.values()))
    together = dict(first, routed={v: r["routed"][v] for v, r in own.items()}, nodes=sorted(own))
    part = {v: routed_partition(v, partitions) for v in ids}
    shared = [sum(mine[w] for w in ids if part[w] == part[v]) for v in ids]
    return wide + size(together), wide + sum(mine.values()) / n, wide + sum(shared) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="fraud-linear", choices=sorted(LAYOUTS))
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--nodes", type=int, nargs="+", default=[10, 25, 50, 100])
    args = parser.parse_args()
    values = LAYOUTS[args.spec].size(args.features)  # fraud-linear: 5 d + 3
    print(f"{args.spec}, {args.features} features: {values} values a node")
    print(f"{'nodes':>5} {'graph':>9} {'degree':>6} {'dropped':>7} {'bytes/node':>11} "
          f"{'cpu ms/node':>11} {'outcome':>9}")  # fmt: skip
    for n in args.nodes:
        for name, degree in (("secagg+", None), ("complete", n - 1)):
            for drop in (0.0, 0.2):
                total, cpu, k, status = measure(n, degree, drop, values)
                print(f"{n:>5} {name:>9} {k:>6} {drop:>7.0%} {total / n:>11,.0f} "
                      f"{1000 * cpu / n:>11.2f} {status:>9}")  # fmt: skip

    print("\nKafka download per node and round (SecAgg+ graph, SecAggRound records, signed)")
    print(f"{'nodes':>5} {'one record':>11} {'own partition':>14} {'P=32':>9}")
    for n in args.nodes:
        before, after, p32 = kafka_download(n, args.spec, args.features)
        print(f"{n:>5} {before:>11,.0f} {after:>14,.0f} {p32:>9,.0f}")


if __name__ == "__main__":
    main()
