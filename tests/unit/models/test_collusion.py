"""The colluding attacks (models.collusion, models.poisoning): ALIE and IPM maths."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from models.collusion import alie_update, alie_z, ipm_update, jitter
from models.errors import ModelError
from models.poisoning import Attack, poison_delta, poison_summary
from models.specs import get_spec

HONEST = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, 0.5], [2.0, 2.0, 0.5]])


def test_alie_is_the_per_coordinate_mean_minus_z_population_stds():
    got = alie_update(HONEST, 1.5)
    want = HONEST.mean(axis=0) - 1.5 * HONEST.std(axis=0, ddof=0)
    assert got.tolist() == pytest.approx(want.tolist())
    assert got[2] == 0.5  # no spread on a coordinate: the honest value itself


@pytest.mark.parametrize("n,m", [(5, 1), (5, 2), (10, 2), (10, 4), (20, 4), (20, 8), (100, 20)])
def test_alie_z_is_baruchs_z_max(n, m):
    s = n // 2 + 1 - m  # honest nodes the attackers need beside them
    assert alie_z(n, m) == pytest.approx(NormalDist().inv_cdf((n - s) / n))
    if n // 2 + 1 - (m + 1) >= 1:
        assert alie_z(n, m) < alie_z(n, m + 1)  # more attackers: a bolder shift


def test_alie_stays_inside_the_honest_spread_for_the_default_z():
    z = alie_z(10, 2)
    sent = alie_update(HONEST, z)
    assert np.all(sent >= HONEST.min(axis=0)) and np.all(sent <= HONEST.max(axis=0))


def test_ipm_is_minus_epsilon_times_the_honest_mean_and_opposes_it():
    sent = ipm_update(HONEST, 0.5)
    assert sent.tolist() == pytest.approx((-0.5 * HONEST.mean(axis=0)).tolist())
    assert sent @ HONEST.mean(axis=0) < 0


def test_bad_inputs_are_model_errors():
    with pytest.raises(ModelError, match="attackers"):
        alie_z(5, 0)
    with pytest.raises(ModelError, match="attackers"):
        alie_z(5, 3)  # 3 of 5 hold the median alone
    with pytest.raises(ModelError, match="honest update"):
        ipm_update(np.zeros((0, 3)), 1.0)
    with pytest.raises(ModelError, match="honest updates"):
        poison_delta(HONEST[0], "alie", 1.0)


def test_attack_defaults_per_kind_and_an_explicit_scale_wins():
    assert Attack.parse("0.2:alie").strength(10) == pytest.approx(alie_z(10, 2))
    assert Attack.parse("0.4:alie").strength(5) == pytest.approx(alie_z(5, 2))
    assert Attack.parse("0.2:ipm").strength(10) == 0.5
    assert Attack.parse("0.2:ipm:3").strength(10) == 3.0
    assert Attack.parse("0.2:signflip").strength(10) == 10.0


def _trained(n: int, seed: int, start=None):
    spec = get_spec("fraud-linear")
    model = spec.new_model() if start is None else spec.load(start)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = {"amount": float(rng.normal()), "hour": float(rng.normal())}
        spec.learn_one(model, x, bool(x["amount"] > 0.5 + 0.1 * seed))
    return spec, spec.summarize(model)


@pytest.mark.parametrize("kind", ["alie", "ipm"])
def test_a_colluding_summary_is_the_reference_plus_the_attack_on_the_honest_deltas(kind):
    spec, reference = _trained(200, 0)
    honest = [(_trained(80, s, start=reference)[1], reference) for s in (1, 2, 3)]
    _, own = _trained(80, 4, start=reference)
    attack = Attack(0.2, kind)
    sent = poison_summary(spec, own, reference, attack, np.random.default_rng(),
                          n_nodes=10, honest=honest)  # fmt: skip
    algebra = spec.algebra
    ref = algebra.learned_vector(reference)
    deltas = np.stack([algebra.learned_vector(i) - ref for i, _ in honest])
    update = alie_update(deltas, alie_z(10, 2)) if kind == "alie" else ipm_update(deltas, 0.5)
    assert np.allclose(algebra.learned_vector(sent), ref + update)
    for name in set(own.tensors) - {"weights", "intercept"}:  # exact statistics stay honest
        assert np.array_equal(sent.tensor(name), own.tensor(name))
    with pytest.raises(ModelError, match="honest update"):
        poison_summary(spec, own, reference, attack, np.random.default_rng(), n_nodes=10)


def test_jitter_gives_each_colluder_its_own_vector_scaled_by_the_honest_spread():
    rng = np.random.default_rng(0)
    shared = ipm_update(HONEST, 0.5)
    sent = np.stack([jitter(shared, HONEST, 0.1, rng) for _ in range(2000)])
    assert not np.array_equal(sent[0], sent[1])  # no longer exact copies
    assert np.allclose(sent.mean(axis=0), shared, atol=0.02)  # the attack is not weakened
    assert sent.std(axis=0) == pytest.approx(0.1 * HONEST.std(axis=0), rel=0.1, abs=1e-12)
    assert np.all(sent[:, 2] == shared[2])  # where the honest agree, no tell-tale noise
    assert np.array_equal(jitter(shared, HONEST, 0.0, rng), shared)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_jitter_is_a_model_error(bad):
    with pytest.raises(ModelError, match="jitter"):
        jitter(HONEST[0], HONEST, bad, np.random.default_rng())


def test_a_jittered_summary_is_seeded_and_differs_from_the_exact_one():
    spec, reference = _trained(200, 0)
    honest = [(_trained(80, s, start=reference)[1], reference) for s in (1, 2, 3)]
    _, own = _trained(80, 4, start=reference)

    def sent(attack, seed):
        out = poison_summary(spec, own, reference, attack, np.random.default_rng(seed),
                             n_nodes=10, honest=honest)  # fmt: skip
        return spec.algebra.learned_vector(out)

    exact, noisy = Attack(0.2, "ipm"), Attack(0.2, "ipm", jitter=0.1)
    assert np.array_equal(sent(exact, 1), sent(exact, 2))  # no jitter: the rng is not used
    assert not np.array_equal(sent(noisy, 1), sent(exact, 1))
    assert np.array_equal(sent(noisy, 1), sent(noisy, 1))
    assert not np.array_equal(sent(noisy, 1), sent(noisy, 2))


def test_jitter_parses_and_only_colluding_kinds_take_it():
    assert Attack.parse("0.2:ipm::0.1") == Attack(0.2, "ipm", None, 0.1)
    assert Attack.parse("0.2:alie:0.5:0.2") == Attack(0.2, "alie", 0.5, 0.2)
    with pytest.raises(ValueError, match="poison jitter"):
        Attack(0.2, "signflip", jitter=0.1)
    with pytest.raises(ValueError, match="poison jitter"):
        Attack.parse("0.2:ipm::-1")


def test_excluded_nodes_lie_about_nothing_so_there_is_nothing_to_poison():
    spec, reference = _trained(200, 0)
    with pytest.raises(ModelError, match="excluded"):
        poison_summary(spec, reference, None, Attack(0.2, "excluded"), np.random.default_rng())
