"""One in-process federated round over an event log, for the demo.

Each store learns its own ``fraud-linear`` model prequentially (score, then
learn) on its own events; the stores' summaries are merged with FedAvg and
the global model is published to the Redis registry with every store's
metrics. The streaming merger job (issue 6) does the same over Kafka; this
shows the models and the registry working on real data before it exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from models.merge import merge
from models.metrics import BinaryMetrics
from models.serialization import global_model_record
from models.specs import get_spec
from prism.registry import NodeRecord, RegistryWriter
from schemas.eventlog import read_events


@dataclass(frozen=True)
class RoundReport:
    stores: int
    events: int
    merged_auc: float | None
    version: int


def federated_round(log_path: Path, redis_url: str, *, version: int = 1) -> RoundReport:
    spec = get_spec("fraud-linear")
    models: dict[str, object] = {}
    metrics: dict[str, BinaryMetrics] = {}
    events = 0
    for event in read_events(log_path):
        if event.record_type != "Transaction" or event.record["label"] is None:
            continue
        record, events = event.record, events + 1
        model = models.setdefault(record["site_id"], spec.new_model())
        score = spec.score_one(model, record["features"])
        metrics.setdefault(record["site_id"], BinaryMetrics()).update(record["label"], score)
        spec.learn_one(model, record["features"], record["label"])
    summaries = [
        spec.summarize(model).with_provenance(
            node_id=site, sequence=version, base_version=version - 1
        )  # fmt: skip
        for site, model in sorted(models.items())
    ]
    result = merge(summaries, "fedavg")
    now = int(time.time() * 1000)
    total = BinaryMetrics()
    for m in metrics.values():
        total = total + m
    record = global_model_record(
        result.summary, version=version, parent_version=version - 1, strategy="fedavg",
        created_at_ms=now, contributors=result.contributors, excluded=result.excluded,
        metrics=total.to_dict(),
    )  # fmt: skip
    nodes = [NodeRecord(site, now, version, "fraud-linear", metrics=metrics[site].to_dict())
             for site in sorted(models)]  # fmt: skip
    writer = RegistryWriter(redis_url).setup()
    try:
        writer.publish_model(record, nodes)
    finally:
        writer.close()
    return RoundReport(len(models), events, total.auc, version)
