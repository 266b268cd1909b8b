"""`prism compare --poison`: which sites lie, what the report says, bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism.cli import main


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("poison") / "five.avro"
    flags = ["--events", "2000", "--sites", "5", "--seed", "3", "--fraud-rate", "0.05"]
    assert main(["datagen", "fraud", *flags, "--labels", "inline", "--out", str(path)]) == 0
    return path


def _report(log: Path, capsys, *flags: str) -> dict:
    assert main(["compare", "--data", str(log), "--json", "--summary-every", "100", *flags]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_only_merged_architectures_change_and_the_report_names_the_attackers(log, capsys):
    clean = _report(log, capsys)
    hit = _report(log, capsys, "--poison", "0.2:signflip:10")
    assert clean["poison"] is None
    assert hit["poison"]["kind"] == "signflip" and hit["poison"]["scale"] == 10.0
    assert len(hit["poison"]["sites"]) == 1 and hit["strategy"] == "fedavg"
    for name in ("centralized", "local"):  # nothing of theirs goes through the merger
        assert hit["architectures"][name]["metric"] == clean["architectures"][name]["metric"]
        assert hit["architectures"][name]["poisoned_summaries"] == 0
    for name in ("federated", "hybrid"):
        a = hit["architectures"][name]
        assert 0 < a["poisoned_summaries"] < a["summaries"]
        assert a["metric"] != clean["architectures"][name]["metric"]


@pytest.mark.parametrize(
    "value", ["0.2", "0.2:flip", "0.7:scaled", "0.2:scaled:-1", "0.2:random::0.1"]
)
def test_bad_poison_values_are_usage_errors(log, value, capsys):
    assert main(["compare", "--data", str(log), "--poison", value]) == 2
    assert "poison" in capsys.readouterr().err


def test_the_excluded_floor_sends_honest_summaries_and_sets_their_votes_aside(log, capsys):
    """The floor an attacked run is read against: a perfect screen, nothing poisoned."""
    clean = _report(log, capsys)
    floor = _report(log, capsys, "--poison", "0.2:excluded")
    assert floor["poison"]["kind"] == "excluded" and len(floor["poison"]["sites"]) == 1
    for name in ("federated", "hybrid"):
        a, c = floor["architectures"][name], clean["architectures"][name]
        assert a["summaries"] == c["summaries"] and a["poisoned_summaries"] > 0
        assert a["metric"] != c["metric"]  # one site's votes are missing
    for name in ("centralized", "local"):
        assert floor["architectures"][name]["metric"] == clean["architectures"][name]["metric"]


def test_jittered_colluders_change_the_run_and_are_reported(log, capsys):
    exact = _report(log, capsys, "--poison", "0.2:ipm")
    noisy = _report(log, capsys, "--poison", "0.2:ipm::0.5")
    assert noisy["poison"]["jitter"] == 0.5 and exact["poison"]["jitter"] == 0.0
    assert (
        noisy["architectures"]["federated"]["metric"]
        != exact["architectures"]["federated"]["metric"]
    )
