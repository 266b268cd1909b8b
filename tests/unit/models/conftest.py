"""Shared fixtures for the models/ unit tests: small synthetic streams."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from models.specs import get_spec
from models.summary import Summary

Event = tuple[dict[str, float], bool]


def events(task: str, n: int, seed: int = 0, features: int = 4) -> list[Event]:
    """A labelled stream: fraud = shifted amounts; iot = correlated sensors + rare spikes."""
    rng = np.random.default_rng(seed)
    names = [f"f{j}" for j in range(features)]
    y = rng.random(n) < (0.1 if task == "fraud" else 0.02)
    base = rng.normal(size=(n, features))
    base[:, 1] = 0.8 * base[:, 0] + 0.2 * base[:, 1]
    X = base * np.arange(1, features + 1) + 10.0 * np.arange(features)
    X[y] += 3.0 * np.arange(1, features + 1)
    return [
        (dict(zip(names, row.tolist(), strict=True)), bool(label))
        for row, label in zip(X, y, strict=True)
    ]


def learned(name: str, n: int = 600, seed: int = 0, node: str = "n1", sequence: int = 1):
    """(model, summary) of spec ``name`` after ``n`` events."""
    spec = get_spec(name)
    model = spec.new_model()
    for x, y in events(spec.task, n, seed):
        spec.learn_one(model, x, y)
    summary = spec.summarize(model).with_provenance(node_id=node, sequence=sequence, base_version=0)
    return model, summary


def assert_same(a: Summary, b: Summary, rtol: float = 0.0, atol: float = 0.0) -> None:
    """Equal summaries: names, features, counts, params and every tensor."""
    assert (a.model_name, a.kind, a.features, a.n_samples) == (
        b.model_name,
        b.kind,
        b.features,
        b.n_samples,
    )
    assert dict(a.params) == dict(b.params)
    assert set(a.tensors) == set(b.tensors)
    for name in a.tensors:
        assert a.tensors[name].shape == b.tensors[name].shape, name
        np.testing.assert_allclose(
            a.tensors[name], b.tensors[name], rtol=rtol, atol=atol, err_msg=name
        )


@pytest.fixture
def make_events() -> Callable[..., list[Event]]:
    return events


@pytest.fixture
def make_learned() -> Callable[..., tuple]:
    return learned


@pytest.fixture
def same() -> Callable[..., None]:
    return assert_same
