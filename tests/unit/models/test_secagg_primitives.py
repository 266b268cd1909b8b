"""The pieces of secure aggregation: fixed point, keys, PRG, Shamir, neighbour graph."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.errors import ModelError
from models.secagg import shamir
from models.secagg.fixedpoint import FixedPoint
from models.secagg.graph import Graph, default_degree, threshold_for
from models.secagg.keys import KeyPair, agree
from models.secagg.prg import mask
from models.secagg.round import seeded_entropy

FP = FixedPoint()
values = st.floats(min_value=-(2.0**47), max_value=2.0**47, allow_nan=False)


@given(st.lists(st.lists(values, min_size=3, max_size=3), min_size=1, max_size=40))
def test_a_decoded_sum_is_the_float_sum_within_fixed_point_precision(rows):
    total = np.zeros(6, dtype=np.uint64)
    for r in rows:
        total += FP.encode(r)
    got = FP.decode(total, participants=len(rows))
    exact = [sum(Fraction(r[j]) for r in rows) for j in range(3)]  # no float rounding
    for g, e in zip(got, exact, strict=True):
        assert abs(Fraction(g) - e) <= len(rows) * Fraction(1, 2 ** (FP.frac_bits + 1)) + abs(
            e
        ) * Fraction(1, 2**52)  # the sums' rounding, then one rounding to float64


@given(st.lists(values, min_size=1, max_size=8), st.integers(0, 2**64 - 1))
def test_adding_then_subtracting_any_mask_is_exact(row, m):
    x = FP.encode(row)
    noise = np.full(2 * len(row), m, dtype=np.uint64)
    assert np.array_equal((x + noise) - noise, x)


def test_small_variances_keep_their_digits():
    """A sum of squares minus a square: 2^-16 steps would lose a 1e-6 variance entirely."""
    x = np.full(50, 8.69) + np.linspace(-1e-3, 1e-3, 50)
    total = np.zeros(4, dtype=np.uint64)
    for v in x:
        total += FP.encode([v, v * v])
    s, sq = FP.decode(total, participants=50)
    var = sq / 50 - (s / 50) ** 2
    assert abs(var - np.var(x)) <= 1e-3 * np.var(x)


def test_values_outside_the_range_or_not_finite_are_refused():
    with pytest.raises(ModelError, match="outside the secure-aggregation range"):
        FP.encode([2.0**48])
    with pytest.raises(ModelError, match="NaN or inf"):
        FP.encode([float("nan")])
    with pytest.raises(ModelError, match="could overflow"):
        FP.decode(np.zeros(1, dtype=np.uint64), participants=FP.max_participants() + 1)


def test_two_nodes_agree_on_one_seed_and_purposes_differ():
    ent = seeded_entropy(3)
    a, b = KeyPair.generate(ent), KeyPair.generate(ent)
    ab = agree(a.secret, b.public, info=b"mask r1")
    assert ab == agree(b.secret, a.public, info=b"mask r1") and len(ab) == 32
    assert ab != agree(a.secret, b.public, info=b"mask r2")
    assert KeyPair.from_secret(a.secret) == a
    with pytest.raises(ModelError, match="key agreement failed"):
        agree(a.secret, b"short", info=b"x")


def test_a_mask_is_deterministic_in_its_seed_and_differs_across_seeds():
    one, two = mask(bytes(32), 64), mask(b"\x01" + bytes(31), 64)
    assert np.array_equal(one, mask(bytes(32), 64)) and not np.array_equal(one, two)
    assert np.array_equal(mask(bytes(32), 128)[:64], one)  # a prefix of the same stream
    with pytest.raises(ModelError):
        mask(bytes(16), 4)


@st.composite
def sharings(draw):
    n = draw(st.integers(1, 12))
    t = draw(st.integers(1, n))
    points = draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    secret = draw(st.binary(min_size=32, max_size=32))
    order = draw(st.permutations(range(n)))
    return secret, t, points, order


@given(sharings(), st.integers(0, 2**32))
def test_any_t_shares_rebuild_the_secret_and_fewer_are_refused(case, seed):
    secret, t, points, order = case
    shares = shamir.split(secret, threshold=t, points=points, entropy=seeded_entropy(seed))
    picked = [shares[i] for i in order]
    assert shamir.combine(picked[:t], threshold=t) == secret
    assert shamir.combine(picked, threshold=t) == secret
    if t > 1:
        with pytest.raises(ModelError, match="cannot rebuild"):
            shamir.combine(picked[: t - 1], threshold=t)
        # t - 1 shares interpolated as if they were enough give some other value
        assert shamir.interpolate_at_zero(picked[: t - 1]) != int.from_bytes(secret, "big")


def test_a_share_survives_its_byte_encoding():
    (s,) = shamir.split(b"k" * 32, threshold=1, points=[7])
    assert shamir.Share.from_bytes(7, s.to_bytes()) == s
    with pytest.raises(ModelError):
        shamir.Share.from_bytes(7, b"\xff" * shamir.SHARE_BYTES)


@given(st.integers(2, 80), st.text("abcdef", min_size=1, max_size=4))
def test_the_graph_is_symmetric_deterministic_and_of_the_chosen_degree(n, round_id):
    ids = [f"node-{i}" for i in range(n)]
    g = Graph.build(round_id, ids[::-1])
    assert g == Graph.build(round_id, ids)
    k = default_degree(n)
    for v in g.nodes:
        assert v not in g.neighbours(v)
        assert all(v in g.neighbours(w) for w in g.neighbours(v))
        if k % 2 == 0 or k == n - 1:
            assert len(g.neighbours(v)) == k
    assert k <= max(4, 2 * np.ceil(1.5 * np.log2(n)))  # O(log n), not O(n)


def test_the_threshold_is_a_majority_and_tolerates_the_dropout_fraction():
    assert threshold_for(10, 0.3) == 7 and threshold_for(10, 0.0) == 10
    assert threshold_for(4, 0.49) == 3  # never below a majority
    with pytest.raises(ModelError):
        threshold_for(10, 0.5)
