"""``learn_many`` (the central learner's batch path) equals River's learn_one loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.errors import ModelError
from models.specs import SPEC_NAMES, get_spec
from models.summary import Summary

KEYS = ("amount", "hour", "risk", "velocity", "zz_rare")

values = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
sparse_event = st.dictionaries(st.sampled_from(KEYS), values, min_size=1, max_size=len(KEYS))
stream = st.lists(st.tuples(sparse_event, st.booleans()), min_size=1, max_size=80)


def assert_same(a: Summary, b: Summary) -> None:
    assert a.features == b.features
    assert a.n_samples == b.n_samples
    for name, t in a.tensors.items():
        np.testing.assert_allclose(b.tensor(name), t, rtol=1e-9, atol=1e-12, err_msg=name)


def as_rows(xs: list[dict[str, float]], *, share: bool) -> tuple[list[tuple], list[list]]:
    """Key tuples and value rows, as the central learner holds them (shared tuples if asked)."""
    known: dict[tuple, tuple] = {}
    keys = [known.setdefault(tuple(x), tuple(x)) if share else tuple(x) for x in xs]
    return keys, [list(x.values()) for x in xs]


def river_loop(spec, model, events) -> None:
    for x, y in events:
        spec.learn_one(model, x, y)


@given(
    warmup=stream,
    batch=stream,
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=4),
)
def test_fraud_linear_batch_path_equals_river_for_any_sparse_stream_and_split(
    warmup, batch, cuts
) -> None:
    spec = get_spec("fraud-linear")
    reference, fast = spec.new_model(), spec.new_model()
    river_loop(spec, reference, warmup)  # both start from the same River-learned state
    river_loop(spec, fast, warmup)
    river_loop(spec, reference, batch)
    bounds = sorted({0, len(batch), *(c for c in cuts if c < len(batch))})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        chunk = batch[lo:hi]
        spec.learn_many(fast, [x for x, _ in chunk], [y for _, y in chunk])
    assert_same(spec.summarize(reference), spec.summarize(fast))
    probe = dict.fromkeys(KEYS, 1.5)
    assert spec.score_one(fast, probe) == pytest.approx(spec.score_one(reference, probe), 1e-9)


def test_fraud_linear_batch_path_on_a_model_restored_from_a_merged_summary(make_events) -> None:
    """A model applied from a summary may know features it never counted (count 0)."""
    spec = get_spec("fraud-linear")
    a, b = spec.new_model(), spec.new_model()
    river_loop(spec, a, make_events("fraud", 50, seed=1))
    river_loop(spec, b, [({"only_b": float(i)}, i % 3 == 0) for i in range(20)])
    from models.merge import merge

    merged = merge([spec.summarize(a), spec.summarize(b)], "fedavg").summary
    reference, fast = spec.load(merged), spec.load(merged)
    more = make_events("fraud", 30, seed=2)
    river_loop(spec, reference, more)
    spec.learn_many(fast, [x for x, _ in more], [y for _, y in more])
    assert_same(spec.summarize(reference), spec.summarize(fast))


def test_fraud_linear_batch_path_refuses_unlabelled_events() -> None:
    spec = get_spec("fraud-linear")
    with pytest.raises(ModelError, match="label"):
        spec.learn_many(spec.new_model(), [{"a": 1.0}], [None])


@pytest.mark.parametrize("path", ["dicts", "rows", "matrix"])
@pytest.mark.parametrize("name", SPEC_NAMES)
def test_every_spec_batch_path_equals_its_learn_one_loop(name, path, make_events) -> None:
    spec = get_spec(name)
    events = make_events(spec.task, 300, seed=5)
    ys = [y if spec.supervised else None for _, y in events]
    reference, fast = spec.new_model(), spec.new_model()
    for (x, _), y in zip(events, ys, strict=True):
        spec.learn_one(reference, x, y)
    for lo, hi in ((0, 120), (120, len(events))):
        xs = [x for x, _ in events[lo:hi]]
        if path == "dicts":
            spec.learn_many(fast, xs, ys[lo:hi])
        elif path == "matrix":  # every event carries every feature here
            names = tuple(xs[0])
            spec.learn_many(fast, [[x[f] for f in names] for x in xs], ys[lo:hi], features=names)
        else:
            keys, rows = as_rows(xs, share=True)
            spec.learn_many(fast, rows, ys[lo:hi], features=keys)
    assert_same(spec.summarize(reference), spec.summarize(fast))


@given(warmup=stream, batch=stream, share=st.booleans())
def test_fraud_linear_rows_path_equals_the_dicts_path(warmup, batch, share) -> None:
    """Same model to the last bit, whatever the key orders and whether tuples are shared."""
    spec = get_spec("fraud-linear")
    by_dicts, by_rows = spec.new_model(), spec.new_model()
    river_loop(spec, by_dicts, warmup)
    river_loop(spec, by_rows, warmup)
    xs, ys = [x for x, _ in batch], [y for _, y in batch]
    spec.learn_many(by_dicts, xs, ys)
    keys, rows = as_rows(xs, share=share)
    spec.learn_many(by_rows, rows, ys, features=keys)
    a, b = spec.summarize(by_dicts), spec.summarize(by_rows)
    assert a.features == b.features and a.n_samples == b.n_samples
    for name, t in a.tensors.items():
        np.testing.assert_array_equal(b.tensor(name), t, err_msg=name)


def test_fraud_linear_rows_path_refuses_unlabelled_or_ragged_input() -> None:
    spec = get_spec("fraud-linear")
    with pytest.raises(ModelError, match="label"):
        spec.learn_many(spec.new_model(), [[1.0]], [None], features=[("a",)])
    with pytest.raises(ModelError, match="rows"):
        spec.learn_many(spec.new_model(), [[1.0], [2.0]], [True], features=[("a",)])
