"""One check suite, run over every registered model spec."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.errors import (
    IncompatibleSummariesError,
    InvalidSummaryError,
    ModelError,
    UnknownSpecError,
)
from models.merge import merge
from models.serialization import state_to_summary, summary_to_state
from models.specs import SPEC_NAMES, get_spec, specs_for_task


@pytest.fixture(params=SPEC_NAMES)
def name(request: pytest.FixtureRequest) -> str:
    """Every registered spec: adding one to the registry adds it here."""
    return request.param


def probes(make_events, task: str) -> list[dict[str, float]]:
    normal = [x for x, _ in make_events(task, 20, seed=99)]
    return normal + [{k: v * 5.0 - 40.0 for k, v in normal[0].items()}]


def scores(spec, model, xs) -> list[float]:
    return [spec.score_one(model, x) for x in xs]


def test_spec_declares_its_identity(name):
    spec = get_spec(name)
    assert spec.name == name
    assert spec.task in ("fraud", "iot")
    assert name in specs_for_task(spec.task)
    assert all(isinstance(v, str) for v in spec.params.values())


def test_algebra_checks_the_spec_own_summaries(name, make_learned):
    spec = get_spec(name)
    assert (spec.algebra.name, spec.algebra.kind) == (spec.name, spec.kind)
    _, summary = make_learned(name)
    assert spec.algebra.check(summary) is summary


def test_pulling_toward_the_global_moves_only_what_the_fleet_can_know(name, make_learned, same):
    """Ditto's pull: share 0 is the identity; anomaly detectors are never pulled; a
    classifier's slopes move (share 1: the global's, in the local scale), never the
    site's intercept or statistics; a share outside [0, 1] is refused."""
    spec = get_spec(name)
    _, local = make_learned(name, seed=1)
    _, glob = make_learned(name, n=900, seed=2)
    same(spec.algebra.pull_toward(local, glob, 0.0), local)
    with pytest.raises(ModelError, match="alpha"):
        spec.algebra.pull_toward(local, glob, 1.5)
    pulled = spec.algebra.pull_toward(local, glob, 1.0)
    if not spec.supervised:
        same(pulled, local)
        return
    for tensor in set(local.tensors) - {"weights"}:
        np.testing.assert_array_equal(pulled.tensor(tensor), local.tensor(tensor))
    raw = lambda s: s.tensor("weights") / np.sqrt(s.tensor("var"))  # noqa: E731
    np.testing.assert_allclose(raw(pulled), raw(glob))
    assert not np.allclose(pulled.tensor("weights"), local.tensor("weights"))


def test_round_trip_through_the_wire_is_equal(name, make_learned, same):
    _, summary = make_learned(name)
    back = state_to_summary(summary_to_state(summary), node_id="n1", sequence=1)
    same(back, summary)


def test_apply_to_a_fresh_model_gives_identical_scores(name, make_learned, make_events, same):
    spec = get_spec(name)
    model, summary = make_learned(name)
    fresh = spec.load(summary)
    xs = probes(make_events, spec.task)
    assert scores(spec, fresh, xs) == scores(spec, model, xs)
    same(spec.summarize(fresh), summary)


def test_restored_model_keeps_learning_like_the_original(name, make_learned, make_events):
    spec = get_spec(name)
    model, summary = make_learned(name)
    fresh = spec.load(summary)
    for x, y in make_events(spec.task, 300, seed=5):
        spec.learn_one(model, x, y)
        spec.learn_one(fresh, x, y)
    xs = probes(make_events, spec.task)
    assert scores(spec, fresh, xs) == scores(spec, model, xs)


def test_scores_are_in_unit_interval_and_batch_matches_one(name, make_learned, make_events):
    spec = get_spec(name)
    model, summary = make_learned(name)
    xs = probes(make_events, spec.task)
    one = np.array(scores(spec, model, xs))
    features = list(summary.features)
    many = spec.score_many(model, np.array([[x[f] for f in features] for x in xs]), features)
    assert np.all((one >= 0) & (one <= 1))
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-15)


def test_merge_of_one_summary_is_itself(name, make_learned, same):
    _, summary = make_learned(name)
    result = merge([summary])
    same(result.summary, summary)
    assert [c.node_id for c in result.contributors] == ["n1"]
    assert result.excluded == ()


def test_merge_of_identical_summaries_is_the_same_model(name, make_learned, make_events):
    spec = get_spec(name)
    model, summary = make_learned(name)
    copies = [replace(summary, node_id=f"n{i}") for i in range(3)]
    merged = merge(copies).summary
    assert merged.n_samples == 3 * summary.n_samples
    xs = probes(make_events, spec.task)
    np.testing.assert_allclose(
        scores(spec, spec.load(merged), xs), scores(spec, model, xs), rtol=1e-9
    )


def test_merge_with_another_spec_or_parameters_raises(name, make_learned):
    _, summary = make_learned(name)
    other = next(n for n in SPEC_NAMES if n != name)
    _, foreign = make_learned(other)
    with pytest.raises(IncompatibleSummariesError):
        merge([summary, foreign])
    tweaked = replace(summary, params=dict(summary.params) | {"version": "999"})
    with pytest.raises(IncompatibleSummariesError):
        merge([summary, tweaked])
    with pytest.raises(IncompatibleSummariesError):
        get_spec(name).apply(tweaked, get_spec(name).new_model())


def test_bad_summaries_raise_typed_errors(name, make_learned):
    spec = get_spec(name)
    _, summary = make_learned(name)
    tensor = next(iter(summary.tensors))
    bad = dict(summary.tensors) | {tensor: np.full(summary.tensors[tensor].shape, np.nan)}
    with pytest.raises(InvalidSummaryError):
        replace(summary, tensors=bad)
    with pytest.raises(InvalidSummaryError):
        merge([])
    with pytest.raises(InvalidSummaryError):
        merge([replace(summary, n_samples=0)])
    truncated = dict(summary.tensors) | {tensor: summary.tensors[tensor].ravel()[:1]}
    with pytest.raises(ModelError):
        spec.algebra.check(replace(summary, tensors=truncated))


def test_unknown_spec_names_raise():
    with pytest.raises(UnknownSpecError, match="known specs"):
        get_spec("no-such-model")
