"""`prism compare --dp-epsilon`: calibration, the privacy key, and the edge cadence count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agents.learner import EdgeLearner, EdgePolicy, cuts_over
from models.privacy import epsilon_for
from prism.cli import main
from prism.compare.privacy import calibrate_rounds, parse_epsilons, site_rounds
from prism.compare.stream import load_stream


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dp") / "four.avro"
    assert main(["datagen", "fraud", "--events", "3000", "--sites", "4", "--regions", "1",
                 "--seed", "3", "--fraud-rate", "0.05", "--out", str(path)]) == 0  # fmt: skip
    return path


@given(st.integers(0, 3000), st.integers(1, 400))
def test_cuts_over_counts_what_a_learner_cuts_on_the_event_cadence(learned, every) -> None:
    learner = EdgeLearner("fraud-linear", "n", EdgePolicy())
    cuts = 0
    for i in range(learned):
        learner.learn({"amount": float(i % 7), "hour": 3.0}, i % 3 == 0)
        if learner.cut_due(every):
            cuts += learner.cut() is not None
    assert cuts == cuts_over(learned, every)


def test_the_privacy_key_has_one_entry_per_epsilon_within_it(log: Path, capsys) -> None:
    args = ["compare", "--data", str(log), "--json", "--summary-every", "100",
            "--architectures", "centralized,federated,hybrid", "--dp-epsilon", "1,4,8"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name, a in report["architectures"].items():  # the existing keys stay
        assert {"metric", "metric_name", "ratio_to_centralized", "bytes_moved"} <= set(a), name
    privacy = report["privacy"]
    assert (privacy["delta"], privacy["clip"]) == (1e-5, 0.05)
    assert [level["epsilon"] for level in privacy["epsilons"]] == [1.0, 4.0, 8.0]
    stream = load_stream(log)
    busiest = max(site_rounds(stream, 100))
    sigmas = [level["noise_multiplier"] for level in privacy["epsilons"]]
    assert sigmas == sorted(sigmas, reverse=True)  # less privacy, less noise
    for level in privacy["epsilons"]:
        eps, sigma = level["epsilon"], level["noise_multiplier"]
        assert level["rounds"] == busiest
        assert epsilon_for(sigma, 1e-5, busiest) <= eps  # the calibrated sigma keeps it
        assert level["epsilon_spent"] <= eps
        # the count was right: the busiest site published all it was calibrated for
        assert level["epsilon_spent"] == pytest.approx(eps, rel=1e-9)
        assert set(level["architectures"]) == {"federated", "hybrid"}
        for name, a in level["architectures"].items():
            plain = report["architectures"][name]["metric"]
            assert a["metric_no_dp"] == plain and 0.0 <= a["metric"] <= 1.0
            assert a["cost"] == pytest.approx(plain - a["metric"])
            assert a["releases_max"] == busiest


@given(st.floats(0.1, 20), st.sampled_from([1e-3, 1e-5, 1e-8]), st.integers(1, 500))
def test_the_calibrated_sigma_never_spends_more_than_asked(epsilon, delta, rounds) -> None:
    cal = calibrate_rounds(epsilon, delta, rounds)
    assert cal.rounds == rounds and cal.delta == delta
    assert epsilon_for(cal.noise_multiplier, delta, rounds) == cal.achieved <= epsilon
    assert cal.achieved == pytest.approx(epsilon, rel=1e-9)


def test_bad_epsilons_and_dp_without_a_federated_architecture_are_usage_errors(log, capsys):
    assert parse_epsilons("1,4,8") == (1.0, 4.0, 8.0)
    for bad in ("0", "x", "1,-2", ""):
        with pytest.raises(ValueError):
            parse_epsilons(bad)
    for flags in (["--dp-epsilon", "1", "--architectures", "centralized,local"],
                  ["--dp-epsilon", "0"], ["--dp-epsilon", "1", "--dp-clip", "0"],
                  ["--dp-epsilon", "1", "--stack"]):  # fmt: skip
        assert main(["compare", "--data", str(log), *flags]) == 2
        assert "dp" in capsys.readouterr().err.lower()
