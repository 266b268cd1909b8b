"""prism.client against the real local Redis, with models the merge job's own code publishes."""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from models.specs import get_spec
from models.summary import Summary
from prism import client as prism_client
from prism.client import Client, CorruptModelError, load_model, models, watch
from runtime.errors import NotFoundError, StackError
from runtime.model_registry import RegistryKeys, RegistryWriter
from runtime.model_registry.client import RegistryUnavailableError
from schemas import Codec
from streams.merger.rounds import CUMULATIVE, Merger, MergerConfig, Update
from streams.merger.store import MergerStore
from streams.merger.wire import registry_record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPEC = get_spec("fraud-linear")
GROUP = "prism-merger"
X = {"amount": 4.2, "hour": 3.0}


def _learn(model: object, seed: int, n: int = 60) -> object:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.5))
    return model


def _summary(model: object, node: str, sequence: int) -> Summary:
    return SPEC.summarize(model).with_provenance(node_id=node, sequence=sequence, base_version=0)


class Publisher:
    """The merge job's path to Redis: rounds.Merger -> wire.registry_record -> MergerStore."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.keys = RegistryKeys(prefix)
        self.redis = redis.Redis.from_url(redis_url)
        self.writer = RegistryWriter(redis_url, keys=self.keys, client=self.redis).setup()
        self.config = MergerConfig(round_size=2, round_timeout_s=60.0)
        self.merger = Merger(self.config)
        self.store = MergerStore(
            self.redis, self.writer, group=GROUP, codec=Codec(), keys=self.keys
        )
        self.now = 1_700_000_000_000
        self.sequence = 0
        self.merged: Summary | None = None
        self.shard = SPEC.new_model()  # a central shard: its snapshots are cumulative

    def round(self) -> int:
        """Two updates (an edge and a central shard's cumulative snapshot) -> one version."""
        self.sequence += 1
        self.now += 1000
        edge_model = _learn(SPEC.new_model(), self.sequence)
        edge = Update(_summary(edge_model, "store-1", self.sequence), created_at_ms=self.now)
        _learn(self.shard, 100 + self.sequence)
        shard = Update(
            _summary(self.shard, "prism-central-fraud/p0", self.sequence),
            tier="central", created_at_ms=self.now, meta={"stats": CUMULATIVE},
        )  # fmt: skip
        for u in (edge, shard):
            assert self.merger.offer(u, self.now) is None
        (closed,) = self.merger.close_due(self.now)
        self.merged = closed.result.summary
        self.store.commit(
            self.merger,
            models=[(closed.name, registry_record(closed, self.config.quantize))],
            nodes=closed.nodes,
            offsets={},
        )
        return closed.version

    def close(self) -> None:
        self.redis.close()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publisher(redis_url: str, prefix: str):
    p = Publisher(redis_url, prefix)
    try:
        yield p
    finally:
        p.close()


def test_load_model_predicts_like_the_merged_model_through_the_query_user(
    publisher: Publisher, redis_query_url: str, prefix: str
) -> None:
    assert publisher.round() == 1
    model = load_model("fraud-linear", redis_query_url, prefix=prefix)
    expected = SPEC.load(publisher.merged).predict_proba_one(X)
    assert model.predict_proba_one(X)[True] == pytest.approx(expected[True], rel=1e-9)
    assert 0.0 < expected[True] < 1.0


def test_a_central_shard_loads_from_its_merged_snapshot(
    publisher: Publisher, redis_query_url: str, prefix: str
) -> None:
    publisher.round()
    publisher.round()
    shard = load_model("prism-central-fraud/p0", redis_query_url, prefix=prefix)
    mine = publisher.shard.predict_proba_one(X)[True]
    assert shard.predict_proba_one(X)[True] == pytest.approx(mine, rel=1e-6)
    listed = {e.name: e for e in models(redis_query_url, prefix=prefix)}
    assert set(listed) == {"fraud-linear", "prism-central-fraud/p0"}
    assert (listed["fraud-linear"].kind, listed["fraud-linear"].version) == ("global", 2)
    node = listed["prism-central-fraud/p0"]
    assert (node.kind, node.spec, node.version, node.n_samples) == ("node", "fraud-linear", 2, 120)
    assert node.updated_at.timestamp() * 1000 == publisher.now


def test_watch_yields_the_current_version_then_each_new_one(
    publisher: Publisher, redis_query_url: str, prefix: str
) -> None:
    publisher.round()
    versions = watch("fraud-linear", redis_query_url, prefix=prefix, poll_s=0.05, timeout_s=5)
    first = next(versions)
    assert first.version == 1
    publisher.round()
    second = next(versions)
    assert (second.name, second.version) == ("fraud-linear", 2)
    expected = SPEC.load(publisher.merged).predict_proba_one(X)[True]
    assert second.model.predict_proba_one(X)[True] == pytest.approx(expected, rel=1e-9)


def test_watch_waits_for_a_model_not_published_yet_and_ends_at_its_timeout(
    publisher: Publisher, redis_query_url: str, prefix: str
) -> None:
    with Client(redis_query_url, prefix=prefix) as client:
        later = threading.Timer(0.3, publisher.round)
        later.start()
        versions = client.watch("fraud-linear", poll_s=0.05, timeout_s=5)
        assert next(versions).version == 1
        later.join()
        quiet = client.watch("fraud-linear", after=1, poll_s=0.05, timeout_s=0.3)
        assert list(quiet) == []


def test_unknown_name_lists_the_known_ones(
    publisher: Publisher, redis_query_url: str, prefix: str
) -> None:
    publisher.round()
    with pytest.raises(NotFoundError, match=r"'fraud-lin'.*known: fraud-linear, prism-central"):
        load_model("fraud-lin", redis_query_url, prefix=prefix)


def test_unreachable_redis_and_a_wrong_password_are_clear_errors(redis_query_url: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(RegistryUnavailableError, match="cannot reach the Redis registry"):
        load_model("fraud-linear", f"redis://127.0.0.1:{port}/0", prefix="p")
    wrong = redis_query_url.replace("@", "x@", 1)
    with pytest.raises(RegistryUnavailableError, match="cannot reach the Redis registry"):
        load_model("fraud-linear", wrong, prefix="p")


def test_records_that_fail_to_decode_are_refused_with_their_reason(
    publisher: Publisher, redis_client: redis.Redis, redis_query_url: str, prefix: str
) -> None:
    publisher.round()
    key = publisher.keys.current("fraud-linear")
    good = redis_client.get(key)
    redis_client.set(key, good[:-7])  # truncated
    with pytest.raises(CorruptModelError, match="registry entry 'fraud-linear' cannot be loaded"):
        load_model("fraud-linear", redis_query_url, prefix=prefix)
    label = Codec().encode("Label", {"event_id": "e", "ts": 1, "label": True, "site_id": None})
    redis_client.set(key, label)  # another schema's bytes
    with pytest.raises(CorruptModelError, match="expected a GlobalModel message, got a Label"):
        load_model("fraud-linear", redis_query_url, prefix=prefix)
    redis_client.hset(publisher.keys.merger(GROUP, "snapshots"), "prism-central-fraud/p0", b"x")
    with pytest.raises(CorruptModelError, match="snapshot of node 'prism-central-fraud/p0'"):
        load_model("prism-central-fraud/p0", redis_query_url, prefix=prefix)


def test_without_a_url_the_settings_query_url_is_used(
    publisher: Publisher, redis_query_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher.round()
    monkeypatch.setenv("PRISM_REDIS_QUERY_URL", redis_query_url)
    monkeypatch.setenv("PRISM_REDIS_PREFIX", prefix)
    monkeypatch.setenv("PRISM_STATE_DIR", "/nonexistent-prism-state")  # no stack file
    assert [e.name for e in prism_client.models()] == ["fraud-linear", "prism-central-fraud/p0"]
    assert load_model("fraud-linear").predict_proba_one(X)[True] > 0.0


def test_without_any_url_the_error_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PRISM_REDIS_QUERY_URL", "PRISM_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PRISM_STATE_DIR", "/nonexistent-prism-state")
    with pytest.raises(StackError, match="set PRISM_REDIS_QUERY_URL"):
        load_model("fraud-linear")


def test_the_readme_quick_start_runs_in_three_lines(
    publisher: Publisher, redis_query_url: str, prefix: str, tmp_path
) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    (snippet,) = re.findall(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert len([line for line in snippet.splitlines() if line.strip()]) == 3  # blank: ruff's
    publisher.round()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PRISM_REDIS_QUERY_URL": redis_query_url,
           "PRISM_REDIS_PREFIX": prefix, "PRISM_STATE_DIR": str(tmp_path / "none")}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", snippet], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    proba = ast.literal_eval(done.stdout.strip())
    assert set(proba) == {False, True} and proba[True] == pytest.approx(1 - proba[False])
