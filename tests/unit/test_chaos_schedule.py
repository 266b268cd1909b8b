"""``bench/chaos/schedule.py``: the seeded fault schedule a chaos run applies (#25 item 2).

Properties a runner relies on: a seed gives the same schedule, every fault is
inside the run's window and of a kind its target allows, one target never has
two faults at once (nor one within ``recover`` s of the last), broker and
Redis are never down together, and the JSON form round-trips (it is what a
failing run prints).
"""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from chaos import schedule as sch  # noqa: E402

ALL = {
    "central-0": ["kill9", "sigterm", "pause"],
    "merger": ["kill9", "sigterm", "pause"],
    "edge-0": ["kill9", "sigterm", "pause", "link-cut"],
    "edge-1": ["link-cut"],
    "broker": ["kill9", "sigterm"],
    "redis": ["kill9", "sigterm"],
}

targets_st = st.dictionaries(
    st.sampled_from(["central-0", "central-1", "merger", "edge-0", "edge-1", "broker", "redis"]),
    st.lists(st.sampled_from(sch.KINDS), min_size=1, max_size=4, unique=True),
    min_size=1,
)
params_st = st.fixed_dictionaries(
    {
        "duration": st.floats(20, 600),
        "mean_gap": st.floats(0.5, 30),
        "fault_s": st.tuples(st.floats(0.1, 5), st.floats(0, 10)).map(
            lambda t: (t[0], t[0] + t[1])
        ),
        "recover": st.floats(0, 10),
        "max_concurrent": st.integers(1, 4),
    }
)


def test_doctests() -> None:
    assert doctest.testmod(sch).failed == 0


@given(st.integers(0, 2**32), targets_st, params_st)
def test_a_seed_gives_one_schedule(seed: int, targets, params) -> None:
    assert sch.make_schedule(seed, targets=targets, **params) == sch.make_schedule(
        seed, targets=dict(reversed(list(targets.items()))), **params
    )


@given(st.integers(0, 2**32), targets_st, params_st)
@example(  # a fault starting where another ends, to the millisecond (float rounding)
    seed=0,
    targets={
        "central-0": ["kill9", "sigterm", "pause"],
        "central-1": ["kill9"],
        "merger": ["kill9", "sigterm", "pause"],
    },  # fmt: skip
    params={
        "duration": 308.0,
        "mean_gap": 0.5,
        "fault_s": (0.1, 0.1),
        "recover": 0.0,
        "max_concurrent": 1,
    },  # fmt: skip
)
def test_faults_in_window_allowed_and_never_overlapping(seed: int, targets, params) -> None:
    faults = sch.make_schedule(seed, targets=targets, warmup=5, quiet=5, **params)
    lo, hi = params["fault_s"]
    assert [f.at for f in faults] == sorted(f.at for f in faults)
    for f in faults:
        assert f.at >= 5 and f.end <= params["duration"] - 5
        assert f.kind in targets[f.target]
        assert lo - 1e-3 <= f.duration <= hi + 1e-3
    for name in targets:
        mine = [f for f in faults if f.target == name]
        for a, b in zip(mine, mine[1:], strict=False):
            assert b.at >= a.end + params["recover"] - 1e-3, (a, b)
    for f in faults:
        live = [g for g in faults if g.at <= f.at < g.end]
        assert len(live) <= params["max_concurrent"]
        assert sum(g.target in sch.INFRA for g in live) <= 1, live


@given(st.integers(0, 2**32))
def test_json_round_trip(seed: int) -> None:
    faults = sch.make_schedule(seed, duration=300, targets=ALL)
    assert sch.loads(sch.dumps(faults)) == faults


def test_seeds_differ_and_a_long_run_uses_every_target_and_kind() -> None:
    a = sch.make_schedule(1, duration=600, targets=ALL)
    assert a != sch.make_schedule(2, duration=600, targets=ALL)
    assert {f.target for f in a} == set(ALL)
    assert {(f.target, f.kind) for f in a} == {(t, k) for t, ks in ALL.items() for k in ks}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"duration": 0},
        {"mean_gap": 0},
        {"fault_s": (2.0, 1.0)},
        {"targets": {"x": ["nope"]}},
        {"targets": {"x": []}},
    ],
)
def test_bad_parameters_are_refused(kwargs) -> None:
    args = {"duration": 60, "targets": ALL} | kwargs
    with pytest.raises(ValueError):
        sch.make_schedule(0, **args)
