"""The poisoning attacks (models.poisoning): exact update maths, honest statistics."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import ModelError
from models.poisoning import Attack, poison_delta, poison_summary
from models.specs import get_spec

DELTA = np.array([0.5, -1.0, 2.0, 0.0])


def test_scaled_and_signflip_are_the_delta_times_plus_or_minus_scale():
    assert poison_delta(DELTA, "scaled", 10.0).tolist() == (10.0 * DELTA).tolist()
    assert poison_delta(DELTA, "signflip", 10.0).tolist() == (-10.0 * DELTA).tolist()
    assert poison_delta(DELTA, "signflip", 1.0).tolist() == (-DELTA).tolist()


def test_random_has_scale_times_the_honest_norm_on_seen_coordinates_only():
    mask = np.array([True, True, False, True])
    out = poison_delta(DELTA, "random", 3.0, np.random.default_rng(1), mask)
    assert np.linalg.norm(out) == pytest.approx(3.0 * np.linalg.norm(DELTA))
    assert out[2] == 0.0 and np.count_nonzero(out) == 3
    again = poison_delta(DELTA, "random", 3.0, np.random.default_rng(1), mask)
    other = poison_delta(DELTA, "random", 3.0, np.random.default_rng(2), mask)
    assert out.tolist() == again.tolist() and out.tolist() != other.tolist()
    # not a rescaled copy of the honest update: it carries none of its direction on purpose
    assert abs(out @ DELTA) < np.linalg.norm(out) * np.linalg.norm(DELTA)


def test_random_needs_a_generator_and_unknown_kinds_are_refused():
    with pytest.raises(ModelError, match="rng"):
        poison_delta(DELTA, "random", 1.0)
    with pytest.raises(ModelError, match="scaled, signflip, random"):
        poison_delta(DELTA, "zero", 1.0)


def _trained(n: int, seed: int, start=None):
    spec = get_spec("fraud-linear")
    model = spec.new_model() if start is None else spec.load(start)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = {"amount": float(rng.normal()), "hour": float(rng.normal())}
        spec.learn_one(model, x, bool(x["amount"] > 0.5))
    return spec, spec.summarize(model)


@pytest.mark.parametrize("kind,factor", [("scaled", 4.0), ("signflip", -4.0)])
def test_summary_moves_the_learned_part_from_the_reference_and_keeps_the_rest(kind, factor):
    spec, reference = _trained(200, 0)
    _, local = _trained(100, 1, start=reference)
    local = local.with_provenance(node_id="n1", sequence=7, base_version=3)
    sent = poison_summary(spec, local, reference, Attack(0.2, kind, 4.0), np.random.default_rng())
    ref, honest = spec.algebra.learned_vector(reference), spec.algebra.learned_vector(local)
    assert np.allclose(spec.algebra.learned_vector(sent), ref + factor * (honest - ref))
    assert not np.allclose(honest, ref)  # the node did learn something
    exact = set(local.tensors) - {"weights", "intercept"}
    assert exact
    for name in exact:  # exact statistics: honest
        assert np.array_equal(sent.tensors[name], local.tensors[name]), name
    assert (sent.n_samples, sent.node_id, sent.sequence, sent.base_version) == (
        local.n_samples, "n1", 7, 3,
    )  # fmt: skip


def test_without_a_reference_the_update_is_from_the_fresh_zero_model():
    spec, local = _trained(100, 1)
    sent = poison_summary(spec, local, None, Attack(0.2, "scaled", 2.0), np.random.default_rng())
    assert np.allclose(spec.algebra.learned_vector(sent), 2.0 * spec.algebra.learned_vector(local))


def test_specs_without_learned_weights_cannot_be_poisoned():
    spec = get_spec("iot-gauss")
    summary = spec.summarize(spec.new_model())
    with pytest.raises(ModelError, match="no learned weights"):
        poison_summary(spec, summary, None, Attack(0.2, "scaled"), np.random.default_rng())


def test_parse_and_defaults():
    assert Attack.parse("0.2:signflip") == Attack(0.2, "signflip")
    assert Attack.parse("0.2:signflip").strength(10) == 10.0  # the blind kinds' default
    assert Attack.parse("0.25:random:2.5") == Attack(0.25, "random", 2.5)


@pytest.mark.parametrize(
    "text", ["0.2", "0.2:flip", "x:scaled", "0.5:scaled", "0:scaled", "0.2:scaled:0",
             "0.2:scaled:nan", "0.2:scaled:1:2"],
)  # fmt: skip
def test_parse_refuses_bad_values_with_the_expected_form(text):
    with pytest.raises(ValueError, match="poison"):
        Attack.parse(text)


def test_attackers_are_a_seeded_share_of_the_nodes():
    attack = Attack(0.2, "scaled")
    chosen = attack.attackers(10, seed=4)
    assert len(chosen) == 2 and chosen <= set(range(10))
    assert attack.attackers(10, seed=4) == chosen
    assert len({attack.attackers(10, seed=s) for s in range(10)}) > 1
    assert len(attack.attackers(3, seed=0)) == 1  # at least one attacker
