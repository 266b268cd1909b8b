"""FedAvgM momentum survives a merger restart through the real Redis (streams/merger/store.py).

The merge job's own path: rounds.Merger -> wire.registry_record -> MergerStore.commit;
a new Merger filled by MergerStore.load must publish the third version an uninterrupted
merger publishes, bit for bit.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis
from unit.streams.test_merger_optimizer_state import CONFIG, _round, _vector

from runtime.model_registry import RegistryKeys, RegistryWriter
from schemas import Codec
from streams.merger.optimizer import decode_state
from streams.merger.rounds import Merger, MergerConfig
from streams.merger.store import MergerStore
from streams.merger.wire import registry_record

pytestmark = pytest.mark.integration


def _store(client: redis.Redis, redis_url: str, keys: RegistryKeys) -> MergerStore:
    writer = RegistryWriter(redis_url, keys=keys, client=client).setup()
    return MergerStore(client, writer, group="prism-merger", codec=Codec(), keys=keys)


@pytest.mark.parametrize("strategy", ["fedavgm", "fedadam"])
def test_momentum_is_committed_and_restored_with_the_models(
    strategy: str, redis_client: redis.Redis, redis_url: str
) -> None:
    keys = RegistryKeys(f"t{uuid.uuid4().hex[:8]}")
    config = MergerConfig(**CONFIG, strategy=strategy)
    straight = Merger(config)
    expected = [_vector(_round(straight, r, 3)) for r in (1, 2, 3)]

    store = _store(redis_client, redis_url, keys)
    first = Merger(config)
    for r in (1, 2):
        c = _round(first, r, 3)
        store.commit(first, models=[(c.name, registry_record(c, config.quantize))],
                     nodes=c.nodes, offsets={0: r})  # fmt: skip
    saved = redis_client.hgetall(store.optimizer_key)
    assert set(saved) == {b"fraud-linear"}
    assert decode_state(saved[b"fraud-linear"])[0] == strategy

    resumed = Merger(config)
    assert _store(redis_client, redis_url, keys).load(resumed, 3000) == {0: 2}
    assert _vector(_round(resumed, 3, 3)).tobytes() == expected[2].tobytes()

    other = Merger(
        MergerConfig(**CONFIG, strategy="fedadam" if strategy == "fedavgm" else "fedavgm")
    )
    _store(redis_client, redis_url, keys).load(other, 3000)  # another optimizer: from zero
    assert other.optimizer_states() == {}
    assert not np.array_equal(_vector(_round(other, 3, 3)), expected[2])
