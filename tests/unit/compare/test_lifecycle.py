"""`prism compare --quality-gate / --canary`: what the merger's lifecycle would have done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.canary import in_canary
from prism.cli import main

FLAGS = ("--summary-every", "100", "--architectures", "federated,hybrid")


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lifecycle") / "five.avro"
    flags = ["--events", "1500", "--sites", "5", "--seed", "3", "--fraud-rate", "0.08"]
    assert main(["datagen", "fraud", *flags, "--labels", "inline", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def poisoned(log) -> dict:
    """One site of five sends sign-flipped updates; gate and canary both on."""
    flags = ["--poison", "0.2:signflip:10", "--quality-gate", "0.02", "--canary", "0.4"]
    return _run(log, *flags, "--canary-min-events", "50")


def _run(log: Path, *flags: str) -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["compare", "--data", str(log), "--json", "--no-progress", *FLAGS, *flags])
    assert code == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_the_gate_holds_poisoned_versions_and_the_json_says_what_it_cost(poisoned):
    section = poisoned["lifecycle"]
    assert section["quality_gate"] == 0.02 and section["canary"] == 0.4
    for arch in ("federated", "hybrid"):
        plain = poisoned["architectures"][arch]
        assert {"metric", "metric_name", "ratio_to_centralized", "bytes_moved"} <= set(plain)
        runs = section["architectures"][arch]
        assert set(runs) == {"gate", "canary", "gate+canary"}
        gate = runs["gate"]
        assert gate["held_back"] == len(gate["held_back_versions"]) > 0
        assert gate["metric_without"] == plain["metric"]
        assert gate["delta"] == pytest.approx(gate["metric"] - plain["metric"], abs=1e-12)
        held = gate["held_back_versions"]
        assert held == sorted(set(held)) and held[0] > 1  # the first global has nothing to beat
        assert gate["canaried"] == gate["promoted"] == gate["rolled_back"] == 0


def test_canary_verdicts_are_counted_and_add_up(poisoned):
    for arch in ("federated", "hybrid"):
        canary = poisoned["lifecycle"]["architectures"][arch]["canary"]
        assert canary["held_back"] == 0 and canary["canaried"] > 0
        pending = int(canary["canary_pending_at_end"] is not None)
        assert canary["promoted"] + canary["rolled_back"] + pending == canary["canaried"]
        assert canary["rolled_back"] == len(canary["rolled_back_versions"])


def test_the_canary_sites_are_the_merger_s(poisoned, log):
    from prism.compare.stream import load_stream

    names = load_stream(log).site_names
    chosen = [s for s in names if in_canary(s, 0.4)]
    assert poisoned["lifecycle"]["canary_sites"] == chosen and 0 < len(chosen) < len(names)


def test_a_gate_that_never_holds_changes_nothing(log):
    """Judged but always published: the run is the plain one, event for event."""
    report = _run(log, "--quality-gate", "1000", "--architectures", "federated")
    gate = report["lifecycle"]["architectures"]["federated"]["gate"]
    assert gate["held_back"] == 0
    assert gate["metric"] == report["architectures"]["federated"]["metric"]
    assert gate["delta"] == 0.0 and gate["merges"] == report["architectures"]["federated"]["merges"]
    # each version's record carries its holdout score: a little more on the wire, never less
    assert gate["bytes_moved"] > gate["bytes_moved_without"]


def test_canaries_that_may_lose_anything_promote_every_version(log):
    report = _run(log, "--canary", "0.4", "--canary-margin", "1000", "--canary-min-events", "20")
    for arch in ("federated", "hybrid"):
        canary = report["lifecycle"]["architectures"][arch]["canary"]
        assert canary["canaried"] > 0 and canary["rolled_back"] == 0
        pending = int(canary["canary_pending_at_end"] is not None)
        assert canary["promoted"] + pending == canary["canaried"]


def test_a_canary_share_with_no_canary_site_promotes_at_once(log):
    """As the merger does: nobody would report, so each version goes to everyone."""
    from prism.compare.stream import load_stream

    share = 0.01
    assert not any(in_canary(s, share) for s in load_stream(log).site_names)
    report = _run(log, "--canary", str(share), "--architectures", "federated")
    canary = report["lifecycle"]["architectures"]["federated"]["canary"]
    assert canary["canaried"] >= 1 and canary["promoted"] == canary["canaried"]
    assert canary["rolled_back"] == 0 and canary["canary_pending_at_end"] is None


def test_the_text_report_has_a_lifecycle_section(log, capsys):
    flags = ["--quality-gate", "0.02", "--architectures", "federated"]
    assert main(["compare", "--data", str(log), "--no-progress", *FLAGS[:2], *flags]) == 0
    out = capsys.readouterr().out
    assert "lifecycle: quality gate 0.02" in out and "federated+gate" in out


def test_without_the_flags_there_is_no_lifecycle_section(log):
    assert _run(log, "--architectures", "federated")["lifecycle"] is None


@pytest.mark.parametrize(
    "flags",
    [
        ["--quality-gate", "-1"],
        ["--canary", "1.5"],
        ["--canary", "0"],
        ["--quality-gate", "0.1", "--architectures", "centralized,local"],
        ["--canary", "0.2", "--stack"],
        ["--quality-gate", "0.1", "--dp-epsilon", "4"],
        ["--quality-gate", "0.1", "--holdout-size", "0"],
    ],
)
def test_bad_lifecycle_flags_are_usage_errors(log, flags, capsys):
    assert main(["compare", "--data", str(log), *flags]) == 2
    assert capsys.readouterr().err


def test_sites_outside_the_canary_never_take_a_version_that_was_rolled_back(log):
    """The staged rollout's promise: a version the canaries reject reaches no one else."""
    from prism.cli import build_parser
    from prism.commands.compare import prepare
    from prism.compare.engine import simulate

    flags = ["--poison", "0.2:signflip:10", "--canary", "0.4", "--canary-min-events", "50"]
    args = build_parser().parse_args(["compare", "--data", str(log), *FLAGS, *flags])
    stream, config = prepare(args)
    run = simulate(stream, config)["federated+canary"]
    assert run.rolled_back, "the poisoned log should make the canaries reject a version"
    canaries = {s for s in stream.site_names if in_canary(s, 0.4)}
    took = {v for s in canaries for v in run.adopted.get(s, [])}
    assert set(run.rolled_back) <= took  # the canaries did score with them
    for site, versions in run.adopted.items():
        if site not in canaries:
            assert not set(versions) & set(run.rolled_back), site
