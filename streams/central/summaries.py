"""Summary publishing of the central worker: each partition's model, a shard for the merger.

Every ``summary_every_s`` (and at a graceful stop) each owned partition that
has learned something sends a ``WeightSummary`` (tier ``central``, node id
``{group}/p{partition}``) to ``model-updates``. The summary is *cumulative*
(the whole partition model; the merger diffs it against the last one it
merged) and carries what the registry shows of the shard: the partition's
sliding-window prequential metrics, its counters and its pending events in
``metrics``, the worker that owns it in ``meta``. The merger is the one
writer of the registry: it merges the shards and records each one as a node.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from models.serialization import weight_summary_record
from models.specs import ModelSpec
from schemas import Codec
from schemas.signing import Signer
from streams.central.partition import PartitionLearner

__all__ = ["SummaryPublisher", "shard_metrics"]


def shard_metrics(learner: PartitionLearner) -> dict[str, float]:
    """A partition's window metrics, counters (``-`` as ``_``) and pending events."""
    out = learner.metrics.total().to_dict()
    out |= {k.replace("-", "_"): float(v) for k, v in learner.counters.items()}
    out["pending"] = float(len(learner.pending))
    return out


class SummaryPublisher:
    """Cuts, signs and produces the shards' WeightSummary records on a cadence."""

    def __init__(
        self,
        spec: ModelSpec,
        producer: Any,
        topic: str,
        *,
        codec: Codec,
        group: str,
        worker: str,
        every_s: float,
        signer: Signer | None = None,
    ) -> None:
        self.spec, self.producer, self.topic, self.codec = spec, producer, topic, codec
        self.group, self.worker, self.every_s = group, worker, every_s
        self.signer = signer  # signs the shard summaries for the merger
        self.sequence = 0
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def publish(self, learners: Iterable[PartitionLearner]) -> int:
        """Each partition's summary that learned anything; returns how many were produced."""
        self.last = time.monotonic()
        live = [lr for lr in learners if lr.counters["learned"] > 0]
        if not live:
            return 0
        now_ms = int(time.time() * 1000)
        self.sequence = max(self.sequence + 1, now_ms)  # increasing across restarts
        for lr in live:
            s = self.spec.summarize(lr.model).with_provenance(
                node_id=f"{self.group}/p{lr.partition}",
                sequence=self.sequence,
                base_version=0,
            )
            record = weight_summary_record(
                s,
                tier="central",
                created_at_ms=now_ms,
                metrics=shard_metrics(lr),
                meta={
                    "worker": self.worker,
                    "partition": str(lr.partition),
                    "stats": "cumulative",  # the whole partition model: the merger diffs it
                },
            )
            if self.signer is not None:
                record = self.signer.sign(record)
            self.producer.produce(
                self.topic, self.codec.encode("WeightSummary", record), key=s.node_id.encode()
            )
        self.producer.poll(0)
        return len(live)
