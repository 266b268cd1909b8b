"""What a run of central + merger + one edge must show after a broker fault: nothing lost or twice.

Shared by the broker restart and broker failover tests, which fault the
broker differently but hold the same services to the same end state.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from helpers.central import assert_checkpoint_matches, reference_models
from helpers.runs import event_ids
from helpers.services import decoded, global_versions, read_topic, wait_exit
from runtime.settings import Settings
from schemas import Codec

CODEC = Codec()


def assert_services_finished(services: dict[str, Any], timeout: float) -> None:
    """Each process exits 0 on its own, without a traceback in its log."""
    for name, proc in services.items():
        assert wait_exit(proc, timeout=timeout) == 0, name
        text = Path(proc.log_path).read_text(errors="replace")
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"


def assert_exact_run(
    settings: Settings,
    tmp_path: Path,
    *,
    central_log: Path,
    edge_log: Path,
    group: str,
    events: int,
    node: str = "e1",
) -> None:
    """One central score per event, each edge event scored once (topic or offline file),
    every edge summary on model-updates once and merged once, and the central
    checkpoints equal to the in-process reference (1e-9) with ``events`` learned."""
    boot = settings.kafka_bootstrap or ""
    scores = [r for _p, _o, r in decoded(boot, settings.topic("scores"))]
    central_ids = [r["event_id"] for r in scores if r["source"] == "central"]
    assert Counter(central_ids) == Counter(event_ids(central_log))  # exactly one each

    offline = tmp_path / node / "scores-offline.jsonl"
    edge_ids = [r["event_id"] for r in scores if r["source"] != "central"]
    if offline.exists():
        edge_ids += [json.loads(x)["event_id"] for x in offline.read_text().splitlines()]
    assert Counter(edge_ids) == Counter(event_ids(edge_log))

    sent = [
        int(CODEC.decode(v)["sequence"])
        for _p, _o, k, v in read_topic(boot, settings.topic("model-updates"))
        if k == node.encode()
    ]
    assert sent and sorted(sent) == list(range(1, len(sent) + 1))  # each once, none missing
    versions = global_versions(boot, settings.topic("global-model"))
    merged = Counter(
        (c.node_id, c.sequence)
        for v in {x.version: x for x in versions}.values()
        for c in v.contributors
        if c.node_id == node
    )
    assert merged == Counter({(node, s): 1 for s in sent})

    client = redis.Redis.from_url(settings.redis_url.get_secret_value())  # type: ignore[union-attr]
    learned = 0
    for p, ref in reference_models(settings).items():
        cp = CODEC.decode(
            client.get(f"{settings.redis_prefix}:checkpoint:{group}:{p}"),
            expected="CentralCheckpoint",
        )
        assert_checkpoint_matches(cp, ref)  # 1e-9, n_samples == learned by the reference
        learned += cp["counters"].get("learned", 0)
    client.close()
    assert learned == events
