"""`prism compare --secure-agg`: the same model as clear FedAvg, at a measured cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism.cli import main


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secagg") / "six.avro"
    assert main(["datagen", "fraud", "--events", "3000", "--sites", "6", "--regions", "1",
                 "--seed", "5", "--fraud-rate", "0.05", "--out", str(path)]) == 0  # fmt: skip
    return path


def _report(log: Path, capsys, *flags: str) -> dict:
    args = ["compare", "--data", str(log), "--architectures", "federated", "--secure-agg"]
    assert main([*args, "--summary-every", "100", "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_secure_agg_reports_its_cost_and_matches_clear_fedavg(log, capsys):
    report = _report(log, capsys, "--quantize", "float64", "--deltas", "off")
    assert set(report["architectures"]) == {"federated", "federated-secagg"}
    s = report["secure_agg"]
    for key in ("metric", "metric_clear_fedavg", "metric_diff", "bytes_per_round",
                "bytes_per_round_clear", "cpu_ms_per_round", "cpu_ms_per_round_clear",
                "max_gap_to_clear_fedavg", "fixed_point_bound", "robust_screening"):  # fmt: skip
        assert key in s, key
    assert s["rounds"] == s["rounds_clear"] > 5
    # every secure global is clear FedAvg of its very updates, to fixed-point precision
    assert s["max_gap_to_clear_fedavg"] <= s["fixed_point_bound"] < 1e-3
    # float64 on the wire: the runs stay within rounding of each other, so do their scores
    assert s["metric_diff"] <= 1e-6
    assert s["bytes_per_round"] > s["bytes_per_round_clear"] > 0  # keys, shares, uint64s
    assert report["architectures"]["federated-secagg"]["bytes"]["summaries"] > 0


def test_secure_agg_refuses_strategies_that_need_individual_updates(log, capsys):
    assert main(["compare", "--data", str(log), "--secure-agg", "--strategy", "krum"]) == 2
    assert "Krum scores each update" in capsys.readouterr().err


def test_nodes_vanishing_mid_round_are_merged_later_once_and_globals_stay_exact(log):
    from prism.compare.engine import SECURE, SimConfig, simulate
    from prism.compare.stream import load_stream

    stream = load_stream(log)
    config = SimConfig(spec_name="fraud-linear", architectures=("federated",), summary_every=100,
                       secure_agg=True, secagg_dropout=0.2, seed=3)  # fmt: skip
    run = simulate(stream, config)[SECURE]
    assert run.secagg_dropped > 0 and run.secagg_abandoned > 0
    assert len(run.secagg_merged) == len(set(run.secagg_merged))  # never counted twice
    # a dropped increment is not lost: at most the last open round's are still pending
    assert len(run.secagg_merged) >= run.summaries - 6
    assert run.secagg_gap <= run.secagg_bound


def test_secure_agg_dropout_needs_secure_agg_and_a_fraction(log, capsys):
    assert main(["compare", "--data", str(log), "--secure-agg-dropout", "0.2"]) == 2
    assert main(["compare", "--data", str(log), "--secure-agg", "--secure-agg-dropout", "0.7"]) == 2
    assert "--secure-agg-dropout" in capsys.readouterr().err


def test_abandoned_rounds_messages_are_counted_in_the_bytes(log):
    from prism.compare.engine import SECURE, SimConfig, simulate
    from prism.compare.stream import load_stream

    stream = load_stream(log)
    config = SimConfig(spec_name="fraud-linear", architectures=("federated",), summary_every=100,
                       secure_agg=True, secagg_dropout=0.2, seed=3)  # fmt: skip
    run = simulate(stream, config)[SECURE]
    assert run.secagg_abandoned > 0 and run.secagg_wasted_bytes > 0
    assert run.bytes_summaries == run.secagg_bytes  # secure nodes send no summary records


def test_secure_agg_runs_in_the_simulation_only(log, capsys):
    assert main(["compare", "--data", str(log), "--secure-agg", "--stack"]) == 2
    assert "prism merger run --secure-agg" in capsys.readouterr().err


@pytest.fixture(scope="module")
def iot_log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secagg-iot") / "iot.avro"
    assert main(["datagen", "iot", "--events", "3000", "--sites", "5", "--regions", "1",
                 "--seed", "5", "--out", str(path)]) == 0  # fmt: skip
    return path


def test_iot_gauss_secure_rounds_rebuild_the_clear_covariances(iot_log, capsys):
    report = _report(iot_log, capsys, "--task", "iot", "--model", "iot-gauss",
                     "--quantize", "float64", "--deltas", "off")  # fmt: skip
    s = report["secure_agg"]
    assert s["rounds"] == s["rounds_clear"] > 3
    # mean and covariance of every secure global against the clear merge of its updates
    assert 0 < s["max_statistic_gap_to_clear"] < 1e-9
    assert s["metric_diff"] <= 1e-6


def test_server_optimizers_run_secure_and_match_their_clear_step(log, capsys):
    report = _report(log, capsys, "--strategy", "fedadam", "--quantize", "float64",
                     "--deltas", "off")  # fmt: skip
    s = report["secure_agg"]
    assert s["rounds"] == s["rounds_clear"] > 5
    assert s["max_gap_to_clear_fedavg"] <= s["fixed_point_bound"]


def test_iot_hst_is_refused_in_secure_mode_with_the_reason(iot_log, capsys):
    args = ["compare", "--data", str(iot_log), "--task", "iot", "--secure-agg"]
    assert main(args) == 2  # the iot default spec is iot-hst
    assert "latest" in capsys.readouterr().err
