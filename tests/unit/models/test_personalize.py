"""Blending global and local models, and reconciling when a new global arrives."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from models.errors import IncompatibleSummariesError, ModelError
from models.personalize import DEFAULT_RULE, blend, reconcile, since
from models.specs import SPEC_NAMES, get_spec


def trained(name, stream, start=None):
    spec = get_spec(name)
    model = spec.new_model() if start is None else spec.load(start)
    for x, y in stream:
        spec.learn_one(model, x, y)
    return spec.summarize(model).with_provenance(node_id="edge-1", sequence=5, base_version=0)


@pytest.fixture
def pair(make_events):
    """(global, local) summaries of one spec trained on different streams."""

    def build(name):
        task = get_spec(name).task
        shifted = [
            ({k: v * 1.5 + 3 for k, v in x.items()}, y) for x, y in make_events(task, 700, 2)
        ]
        return trained(name, make_events(task, 900, 1)), trained(name, shifted)

    return build


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_blend_ends_are_the_two_models(name, pair, same):
    g, lo = pair(name)
    same(blend(g, lo, 0.0), lo)
    same(blend(g, lo, 1.0), g)
    mid = blend(g, lo, 0.5)
    get_spec(name).algebra.check(mid)
    with pytest.raises(ModelError):
        blend(g, lo, 1.5)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_linear_blend_interpolates_logits_exactly(pair, make_events):
    spec = get_spec("fraud-linear")
    g, lo = pair("fraud-linear")
    for alpha in (0.2, 0.7):
        mixed = spec.load(blend(g, lo, alpha))
        for x, _ in make_events("fraud", 10, 9):
            expected = alpha * logit(spec.score_one(spec.load(g), x)) + (1 - alpha) * logit(
                spec.score_one(spec.load(lo), x)
            )
            assert logit(spec.score_one(mixed, x)) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_gauss_blend_is_the_moment_matched_mixture(pair):
    g, lo = pair("iot-gauss")
    out = blend(g, lo, 0.3)
    mg, ml = g.tensors["mean"], lo.tensors["mean"]
    mean = 0.3 * mg + 0.7 * ml
    second = 0.3 * (g.tensors["cov"] + np.outer(mg, mg)) + 0.7 * (
        lo.tensors["cov"] + np.outer(ml, ml)
    )
    np.testing.assert_allclose(out.tensors["mean"], mean)
    np.testing.assert_allclose(out.tensors["cov"], second - np.outer(mean, mean), atol=1e-9)
    assert out.n_samples == round(0.3 * g.n_samples + 0.7 * lo.n_samples)


def test_hst_blend_averages_reference_windows_and_keeps_the_local_current_window(pair):
    g, lo = pair("iot-hst")
    out = blend(g, lo, 0.25)
    expected = np.rint(0.25 * g.tensors["r_mass"] + 0.75 * lo.tensors["r_mass"])
    np.testing.assert_array_equal(out.tensors["r_mass"], expected)
    np.testing.assert_array_equal(out.tensors["l_mass"], lo.tensors["l_mass"])
    assert out.tensors["ref_windows"].tolist() == [1]


def test_reconcile_replace_adopts_the_global_with_local_provenance(pair, same):
    g, lo = pair("fraud-linear")
    g = g.with_provenance(node_id="global", sequence=0, base_version=8)
    out = reconcile(g, lo, None, rule="replace")
    assert (out.node_id, out.sequence, out.base_version) == ("edge-1", 5, 8)
    assert np.array_equal(out.tensors["weights"], g.tensors["weights"])
    assert DEFAULT_RULE == "delta"


@pytest.mark.parametrize("name", ["fraud-linear", "iot-gauss"])
def test_delta_reapplies_local_progress_onto_the_new_global(name, make_events, same):
    spec = get_spec(name)
    task = spec.task
    old = trained(name, make_events(task, 500, 1))
    new_events = make_events(task, 300, 3)
    local = trained(name, new_events, start=old)
    new_global = trained(name, make_events(task, 800, 4))
    out = reconcile(new_global, local, old)
    progress = since(local, old)
    assert progress.n_samples == 300 and out.n_samples == 1100
    oracle = trained(name, new_events)  # the same events learned from scratch
    for t in ("count", "mean", "var") if name == "fraud-linear" else ("mean", "cov"):
        np.testing.assert_allclose(progress.tensors[t], oracle.tensors[t], rtol=1e-6, atol=1e-6)
    if name == "fraud-linear":
        drift = local.tensors["weights"] - old.tensors["weights"]
        np.testing.assert_allclose(out.tensors["weights"], new_global.tensors["weights"] + drift)
    # nothing learned locally since the old global: delta == replace
    same(
        reconcile(new_global, old, old),
        new_global.with_provenance(node_id="edge-1", sequence=5, base_version=0),
        rtol=1e-12,
        atol=1e-12,
    )


def test_delta_for_hst_keeps_global_reference_and_local_current_window(make_events):
    old = trained("iot-hst", make_events("iot", 600, 1))
    local = trained("iot-hst", make_events("iot", 130, 2), start=old)
    new_global = trained("iot-hst", make_events("iot", 900, 3))
    out = reconcile(new_global, local, old, rule="delta")
    np.testing.assert_array_equal(out.tensors["r_mass"], new_global.tensors["r_mass"])
    np.testing.assert_array_equal(out.tensors["l_mass"], local.tensors["l_mass"])
    assert out.n_samples == 900 + 130
    get_spec("iot-hst").load(out)


def test_blend_rule_and_bad_arguments(pair, same):
    g, lo = pair("iot-gauss")
    same(reconcile(g, lo, None, rule="blend", alpha=0.4), blend(g, lo, 0.4))
    with pytest.raises(ModelError, match="unknown reconcile rule"):
        reconcile(g, lo, None, rule="merge-ish")
    other, _ = pair("fraud-linear")
    with pytest.raises(IncompatibleSummariesError):
        reconcile(g, other)
    with pytest.raises(IncompatibleSummariesError, match="not trained from"):
        since(lo, replace(lo, n_samples=lo.n_samples + 1))
