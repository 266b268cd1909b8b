"""Secure rounds beyond fraud-linear FedAvg: iot-gauss's exact state and the server optimizers.

Each test sets the secure merge against the clear merge of the very updates
the round included (dropouts returned for re-offering are left out of both).
"""

from __future__ import annotations

import functools

import numpy as np
from helpers.secagg_rounds import drawn_round
from hypothesis import event, given, settings
from hypothesis import strategies as st

from models.merge import merge
from models.secagg.aggregate import CODEC, global_from_total, node_vector, secure_merge
from models.secagg.round import seeded_entropy
from models.specs import get_spec
from models.strategies import get_strategy
from models.summary import Summary

ULP = 2.0 ** -(CODEC.frac_bits + 1)
GAUSS = get_spec("iot-gauss")
SENSORS = ("humidity", "pressure", "temp", "vibration")


def _gauss(i: int) -> Summary:
    """Site i's iot-gauss increment: correlated sensors, means up to ~1000, stds 1e-3 to 5."""
    model = GAUSS.new_model()
    rng = np.random.default_rng(100 + i)
    scale = np.array([5.0, 0.5, 1.0, 1e-3]) * (1 + i % 3)
    centre = np.array([40.0, 1000.0, 20.0 + i, 0.1])
    mix = np.eye(4) + 0.3 * rng.normal(size=(4, 4))
    X = centre + (rng.normal(size=(60 + 25 * i, 4)) @ mix) * scale
    GAUSS.learn_many(model, X, features=list(SENSORS))
    return GAUSS.summarize(model).with_provenance(node_id=f"s{i}", sequence=1, base_version=0)


@functools.cache
def gauss_pool() -> tuple[Summary, ...]:
    return tuple(_gauss(i) for i in range(8))


def assert_same_gaussian(secure: Summary, clear: Summary, m: int) -> None:
    """Fixed point: sums within m ULP, divided by the count; float64 rounding of the second
    moments (values ~ mean^2) besides, as any two ways of summing them differ by that."""
    assert secure.features == clear.features and secure.n_samples == clear.n_samples
    n, mean, cov = clear.n_samples, clear.tensor("mean"), clear.tensor("cov")
    assert np.all(np.abs(secure.tensor("mean") - mean) <= m * ULP / n + 1e-14 * np.abs(mean))
    square = np.abs(cov) + np.abs(np.outer(mean, mean))
    slack = m * ULP / n * (1 + 2 * np.max(np.abs(mean))) + 1e-13 * square
    assert np.all(np.abs(secure.tensor("cov") - cov) <= slack)


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(0, 7), min_size=2, max_size=8, unique=True),
    st.lists(st.sampled_from((*[None] * 8, "input", "unmask")), min_size=8, max_size=8),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_secure_iot_gauss_equals_the_clear_merge_of_the_included_updates(
    picks, when, with_current, seed
):
    out, current, included = drawn_round(
        gauss_pool(), picks, when, with_current, seed, strategy="exact", round_id=f"g{seed}"
    )
    if included is None:
        return
    clear = merge(included, "exact", current=current, accumulate=with_current).summary
    assert_same_gaussian(out.result.summary, clear, len(included))


def test_iot_gauss_node_vectors_summed_rebuild_the_clear_merge_on_the_merger():
    """The Kafka split: nodes encode, the merger decodes the (mask-free) sum onto its global."""
    parts = list(gauss_pool()[:5])
    current = merge([gauss_pool()[7]], "exact").summary.with_provenance(
        node_id="global", sequence=0, base_version=2
    )
    total = sum(node_vector(s, SENSORS) for s in parts)  # uint64 words wrap as the masks do
    included = [(s.node_id, s.sequence) for s in parts]
    got = global_from_total("iot-gauss", SENSORS, total, included, current).summary
    clear = merge(parts, "exact", current=current, accumulate=True).summary
    assert_same_gaussian(got, clear, len(parts))
    assert got.base_version == 2


def test_a_node_offers_the_upper_triangle_only():
    d = len(SENSORS)
    assert len(node_vector(gauss_pool()[0], SENSORS)) == CODEC.width(d + d * (d + 1) // 2 + 1)


# -- server optimizers over the unmasked mean ---------------------------------------------


def _linear(i: int, rnd: int) -> Summary:
    spec = get_spec("fraud-linear")
    model = spec.new_model()
    rng = np.random.default_rng([i, rnd])
    names = ["f0", "f1", "f2"] if i % 3 == 2 else ["f0", "f1", "f2", "f3"]
    for _ in range(80 + 30 * i):
        y = bool(rng.random() < 0.2)
        row = rng.normal(size=len(names)) + 2.0 * y + rnd
        spec.learn_one(model, dict(zip(names, row.tolist(), strict=True)), y)
    return spec.summarize(model).with_provenance(node_id=f"n{i}", sequence=rnd, base_version=0)


def _learned(s: Summary) -> np.ndarray:
    return get_spec("fraud-linear").algebra.learned_vector(s)


@settings(max_examples=6, deadline=None)
@given(
    st.sampled_from(("fedavgm", "fedavgm:server_lr=0.7,momentum=0.5", "fedadam:server_lr=0.05")),
    st.lists(
        st.lists(st.integers(0, 5), min_size=2, max_size=5, unique=True), min_size=3, max_size=4
    ),
    st.integers(0, 2**32),
)
def test_secure_server_optimizers_equal_the_clear_ones_round_after_round(name, rounds, seed):
    """One optimizer object per side carries its state (velocity, moments) across rounds."""
    secure_strat, clear_strat = get_strategy(name), get_strategy(name)
    secure_current = clear_current = None
    for r, picks in enumerate(rounds, start=1):
        updates = [_linear(i, r) for i in picks]
        out = secure_merge(
            updates,
            secure_strat,
            current=secure_current,
            accumulate=secure_current is not None,
            entropy=seeded_entropy(seed + r),
            round_id=f"o{r}",
        )
        clear = merge(
            updates, clear_strat, current=clear_current, accumulate=clear_current is not None
        ).summary
        assert out.result is not None
        got = out.result.summary
        assert np.allclose(_learned(got), _learned(clear), rtol=1e-9, atol=1e-9)
        assert got.n_samples == clear.n_samples
        secure_current = got.with_provenance(node_id="g", sequence=0, base_version=r)
        clear_current = clear.with_provenance(node_id="g", sequence=0, base_version=r)
    event(f"{len(rounds)} rounds")
    for key, value in clear_strat.state().items():  # the same optimizer state on both sides
        assert np.allclose(secure_strat.state()[key], value, rtol=1e-9, atol=1e-9)


def test_the_server_optimizer_steps_from_the_current_global():
    """The step is taken at all: half a step (server_lr=0.5) is not FedAvg."""
    first = [_linear(i, 1) for i in range(3)]
    second = [_linear(i, 2) for i in range(3)]
    strat = get_strategy("fedavgm:server_lr=0.5,momentum=0.9")
    one = secure_merge(first, strat, entropy=seeded_entropy(1)).result.summary
    one = one.with_provenance(node_id="g", sequence=0, base_version=1)
    kw = {"current": one, "accumulate": True, "entropy": seeded_entropy(2)}
    momentum = secure_merge(second, strat, **kw).result.summary
    strat = get_strategy("fedavgm:server_lr=0.5,momentum=0.9")
    secure_merge(first, strat, entropy=seeded_entropy(1))
    plain = secure_merge(second, "fedavg", **kw).result.summary
    assert not np.allclose(_learned(momentum), _learned(plain))
    # first round: no current global, no step (FedAvg), as in the clear merge
    assert np.allclose(_learned(one), _learned(merge(first, "fedavg").summary), atol=1e-9)
