"""A merger restart keeps FedAvgM / FedAdam momentum: rounds split by a save and a restore
give the same globals, bit for bit, as an uninterrupted run (streams/merger/optimizer.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InvalidSummaryError
from models.serialization import global_model_from_record
from models.specs import get_spec
from models.summary import Summary
from schemas import Codec
from streams.merger.optimizer import decode_state, encode_state
from streams.merger.rounds import Closed, Merger, MergerConfig, Update
from streams.merger.wire import registry_record

SPEC = get_spec("fraud-linear")
CODEC = Codec()
NODES = ("a", "b", "c")
# deltas off: the first version after a restart goes whole, which with deltas on is another
# rounding of the same merge than the uninterrupted run's delta; here only momentum differs
CONFIG = {"round_size": 3, "round_timeout_s": 60.0, "deltas": None}


def _summary(node: str, seq: int, seed: int) -> Summary:
    rng = np.random.default_rng(seed)
    model = SPEC.new_model()
    for _ in range(30):
        x = {"amount": float(rng.normal(3, 1)), "hour": float(rng.normal(12, 3))}
        SPEC.learn_one(model, x, bool(x["amount"] > 3.5))
    return SPEC.summarize(model).with_provenance(node_id=node, sequence=seq, base_version=0)


def _round(m: Merger, r: int, seed: int) -> Closed:
    for i, node in enumerate(NODES):
        s = replace(_summary(node, r, seed * 1000 + r * 10 + i), base_version=r - 1)
        assert m.offer(Update(s, created_at_ms=r * 1000), r * 1000) is None
    (closed,) = m.close_due(r * 1000)
    return closed


def _restart(old: Merger, saved: list[Closed], *, with_optimizer: bool = True) -> Merger:
    """A new merger from what the store keeps: the registry's records and the optimizer JSON."""
    new = Merger(old.config)
    for c in saved:
        record = CODEC.decode(
            CODEC.encode("GlobalModel", registry_record(c, old.config.quantize)),
            expected="GlobalModel",
        )
        info = global_model_from_record(record)
        new.restore_model(c.name, info.summary, info.version)
    if with_optimizer:
        for name, state in old.optimizer_states().items():
            strategy, arrays = decode_state(encode_state(old.strategy.name, state))
            assert strategy == old.strategy.name
            new.restore_optimizer(name, arrays)
    return new


def _vector(c: Closed) -> np.ndarray:
    """Every tensor of the published global, in one array: equal bytes, equal models."""
    s = c.result.summary
    return np.concatenate([np.ravel(s.tensors[k]).astype(np.float64) for k in sorted(s.tensors)])


@settings(max_examples=12, deadline=None)
@given(
    strategy=st.sampled_from(["fedavgm:momentum=0.9", "fedadam:server_lr=0.05"]),
    rounds=st.integers(3, 5),
    split=st.integers(2, 4),
    seed=st.integers(0, 10_000),
)
def test_rounds_split_by_a_restart_equal_an_uninterrupted_run_bit_for_bit(
    strategy: str, rounds: int, split: int, seed: int
) -> None:
    split = min(split, rounds - 1)
    config = MergerConfig(**CONFIG, strategy=strategy)
    straight = Merger(config)
    expected = [_vector(_round(straight, r, seed)) for r in range(1, rounds + 1)]

    first = Merger(config)
    saved = [_round(first, r, seed) for r in range(1, split + 1)]
    resumed = _restart(first, saved)
    got = [_vector(c) for c in saved] + [
        _vector(_round(resumed, r, seed)) for r in range(split + 1, rounds + 1)
    ]
    for e, g in zip(expected, got, strict=True):
        assert e.tobytes() == g.tobytes()


def test_without_the_optimizer_state_the_next_global_differs() -> None:
    """The check above can fail: a restart that forgets the momentum lands elsewhere."""
    config = MergerConfig(**CONFIG, strategy="fedavgm")
    straight = Merger(config)
    expected = [_vector(_round(straight, r, 7)) for r in (1, 2, 3)]
    first = Merger(config)
    saved = [_round(first, r, 7) for r in (1, 2)]
    forgot = _vector(_round(_restart(first, saved, with_optimizer=False), 3, 7))
    kept = _vector(_round(_restart(first, saved), 3, 7))
    assert kept.tobytes() == expected[2].tobytes()
    assert not np.array_equal(forgot, expected[2])


def test_each_model_has_its_own_momentum() -> None:
    """Two models' rounds do not step one optimizer: each state has its model's length."""
    m = Merger(MergerConfig(strategy="fedavgm", round_size=3, round_timeout_s=60.0))
    assert m.strategy_for("fraud-linear") is not m.strategy_for("iot-gauss")
    assert m.strategy_for("fraud-linear") is m.strategy_for("fraud-linear")
    plain = Merger(MergerConfig(strategy="fedavg"))
    assert plain.strategy_for("fraud-linear") is plain.strategy


@given(
    arrays=st.dictionaries(
        st.sampled_from(["m", "v", "velocity"]),
        st.lists(st.floats(allow_nan=False, width=64), max_size=20),
        min_size=1,
    )
)
def test_the_state_json_reads_back_bit_for_bit(arrays: dict[str, list[float]]) -> None:
    state = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    name, back = decode_state(encode_state("fedadam", state))
    assert name == "fedadam" and set(back) == set(state)
    for k, v in state.items():
        assert back[k].dtype == np.float64 and back[k].tobytes() == v.tobytes()


@pytest.mark.parametrize("data", [b"", b"{}", b'{"strategy": "fedavgm", "arrays": {"m": 1}}'])
def test_malformed_state_is_an_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(InvalidSummaryError):
        decode_state(data)
