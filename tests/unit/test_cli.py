from __future__ import annotations

import subprocess
import sys

import pytest

from prism.cli import build_parser, main
from runtime.settings import Settings


def test_help_lists_every_setting_and_command() -> None:
    text = build_parser().format_help()
    for name in Settings.model_fields:
        assert f"PRISM_{name.upper()}" in text
    for command in ("stack", "topics", "demo"):
        assert command in text


def test_python_dash_m_prism_is_the_same_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "prism", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "PRISM_KAFKA_BOOTSTRAP" in result.stdout


def test_missing_kafka_is_a_message_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PRISM_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path))
    assert main(["topics", "list"]) == 2
    err = capsys.readouterr().err
    assert "prism stack up" in err and "Traceback" not in err


def test_datagen_that_fails_leaves_no_log_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The generators validate lazily; a half-written file would pass for a log
    (the compose edges regenerate theirs only when it is missing)."""
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "local.avro"
    bad = ["datagen", "fraud", "--events", "50", "--sites", "1", "--regions", "4"]
    assert main([*bad, "--out", str(out)]) != 0
    assert "regions" in capsys.readouterr().err
    assert list(tmp_path.glob("*local.avro")) == []
    assert main([*bad[:-1], "1", "--out", str(out)]) == 0
    assert out.is_file() and list(tmp_path.glob("*local.avro")) == [out]


def test_personal_pull_and_shift_global_default_to_the_learners_and_reach_it() -> None:
    from edge_agents.learner import EdgePolicy
    from prism.commands.edge import config_from

    parser = build_parser()
    assert parser.parse_args(["compare", "--data", "x"]).personal_pull == EdgePolicy.personal_pull
    run = ["edge", "run", "--node", "n1", "--source", "kafka"]
    assert config_from(parser.parse_args(run)).policy.personal_pull == EdgePolicy.personal_pull
    pulled = config_from(parser.parse_args([*run, "--personal-pull", "0.05", "--no-shift-global"]))
    assert pulled.policy.personal_pull == 0.05 and not pulled.policy.shift_global
    assert config_from(parser.parse_args(run)).policy.shift_global == EdgePolicy.shift_global
    assert parser.parse_args(["compare", "--data", "x"]).shift_global == EdgePolicy.shift_global
    assert parser.parse_args(["compare", "--data", "x"]).max_move == EdgePolicy.max_move
    assert config_from(parser.parse_args(run)).policy.max_move == EdgePolicy.max_move
    assert config_from(parser.parse_args([*run, "--max-move", "0.5"])).policy.max_move == 0.5


def test_a_fleet_passes_its_agents_flags_and_switches_as_edge_run_spells_them() -> None:
    from prism.commands.edge import fleet_flags

    parser = build_parser()
    fleet = ["edge", "fleet", "--nodes", "2", "--data", "x.avro", "--personal-pull", "0.03"]
    fleet += ["--max-move", "0.04"]
    passed = fleet_flags(parser.parse_args([*fleet, "--no-shift-global"]))
    assert passed[passed.index("--personal-pull") + 1] == "0.03" and "--no-shift-global" in passed
    assert "--shift-global" in fleet_flags(parser.parse_args(fleet))
    run = parser.parse_args(["edge", "run", "--node", "n", "--source", "kafka", *passed])
    assert not run.shift_global and run.personal_pull == 0.03 and run.max_move == 0.04


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--quality-gate", "0.02"], "give --holdout-topic too"),
        (["--holdout-topic", "holdout", "--quality-gate", "-1"], "margin must be >= 0"),
        (["--holdout-topic", "holdout", "--holdout-size", "0"], "holdout size must be >= 1"),
    ],
)
def test_a_quality_gate_without_a_holdout_or_with_bad_numbers_is_a_usage_error(
    flags: list[str], says: str, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys
) -> None:
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path))
    assert main(["merger", "run", *flags]) == 2  # refused before any connection is tried
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_models_nodes_shows_a_node_s_epsilon_and_a_dash_without_dp() -> None:
    from prism.commands.models import _epsilon

    assert _epsilon({"dp_epsilon": 3.8543, "dp_delta": 1e-5, "events": 9.0}) == "3.85 (delta 1e-05)"
    assert _epsilon({"events": 9.0}) == "-"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--strategy", "krum"], "Krum scores each update"),
        (["--strategy", "fedmedian"], "median needs every node's value"),
        (["--strategy", "fedavg:screen=true"], "robust screening is lost"),
        (["--tiers", "regional,global"], "global rounds only"),
        (["--secure-max-dropout", "0.6"], "max dropout is in [0, 0.5)"),
    ],
)
def test_secure_aggregation_refuses_what_needs_individual_updates_on_the_cli(
    flags: list[str], says: str, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys
) -> None:
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path))
    assert main(["merger", "run", "--secure-agg", *flags]) == 2  # before any connection
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_secure_rounds_keep_async_for_the_clear_nodes_and_need_two_participants() -> None:
    import argparse

    from prism.commands.merger import _secure_config

    args = argparse.Namespace(strategy="async:max_staleness=5", tiers="global", round_size=1,
                              min_participants=1, round_timeout=7.0, secure_step_timeout=3.0,
                              secure_max_dropout=0.2, secure_model="fraud-linear")  # fmt: skip
    config = _secure_config(args)
    assert (config.min_participants, config.round_size, config.keys_timeout_s) == (2, 2, 7.0)


def test_secure_rounds_take_a_summable_spec_and_the_server_optimizers() -> None:
    import argparse

    from models.errors import ModelError
    from prism.commands.merger import _secure_config

    args = argparse.Namespace(strategy="fedadam", tiers="global", round_size=3,
                              min_participants=2, round_timeout=7.0, secure_step_timeout=3.0,
                              secure_max_dropout=0.2, secure_model="iot-gauss")  # fmt: skip
    assert _secure_config(args).model_name == "iot-gauss"
    with pytest.raises(ModelError, match="latest"):
        _secure_config(argparse.Namespace(**{**vars(args), "secure_model": "iot-hst"}))


def test_an_edge_in_secure_mode_refuses_hybrid_mode_and_specs_it_cannot_sum(
    monkeypatch: pytest.MonkeyPatch, tmp_path, capsys
) -> None:
    monkeypatch.setenv("PRISM_STATE_DIR", str(tmp_path))
    base = ["edge", "run", "--node", "n1", "--source", "f.avro", "--secure-agg"]
    assert main([*base, "--mode", "hybrid"]) == 2
    assert "does not go with --mode hybrid" in capsys.readouterr().err
    assert main([*base, "--task", "iot"]) == 2
    assert "'iot-hst': its merge is not all sums" in capsys.readouterr().err
    assert main([*base, "--task", "iot", "--model", "iot-gauss", "--source", "missing.avro"]) != 0
    assert "iot-gauss" not in capsys.readouterr().err  # refused for the missing file, not the spec
