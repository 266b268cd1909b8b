"""``bench/learning_quality.py`` on tiny logs: the JSON's shape and targets computed from it.

The real simulation runs (no mocks): a 1,500-event fraud log over 3 sites
(with the outage run) and River's bundled Phishing export, as the bench makes
them with the project's CLI.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import learning_quality as lq  # noqa: E402

FRAUD = ("datagen", "fraud", "--events", "1500", "--sites", "3", "--regions", "1", "--seed", "7",
         "--fraud-rate", "0.05")  # fmt: skip


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    logs = {log.name: log for log in lq.LOGS}
    tiny = [dataclasses.replace(logs["fraud"], command=FRAUD), logs["phishing"]]
    return lq.run(tiny, tmp_path_factory.mktemp("lq"), outage=lq.DEFAULT_OUTAGE)


def test_every_architecture_has_the_stable_keys(result: dict) -> None:
    assert set(result["logs"]) == {"fraud", "phishing"}
    assert result["logs"]["fraud"]["events"] == 1500 and result["logs"]["fraud"]["sites"] == 3
    for name, entry in result["logs"].items():
        archs = entry["architectures"]
        assert set(archs) == set(lq.ARCHS), name
        for arch, a in archs.items():
            assert a["metric_name"] == "roc_auc", (name, arch)
            assert 0.0 <= a["metric"] <= 1.0, (name, arch)
            assert a["ratio_to_centralized"] == round(
                a["metric"] / archs["centralized"]["metric"], 4
            )
            assert isinstance(a["bytes_moved"], int) and a["bytes_moved"] >= 0
        assert archs["local"]["bytes_moved"] == 0
        assert archs["centralized"]["bytes_moved"] > archs["hybrid"]["bytes_moved"]


def test_the_checks_follow_from_the_returned_metrics(result: dict) -> None:
    for name, entry in result["logs"].items():
        m = {arch: a["metric"] for arch, a in entry["architectures"].items()}
        assert set(entry["checks"]) == {"a", "b"}, name  # fraud and phishing: (a) and (b)
        a = entry["checks"]["a"]
        threshold = max(m["local"], m["federated"]) - 0.005
        assert a["threshold"] == pytest.approx(threshold)
        assert a["margin"] == pytest.approx(m["hybrid"] - threshold, abs=1e-6)
        assert a["pass"] is (m["hybrid"] >= threshold)
        b = entry["checks"]["b"]
        assert b["margin"] == pytest.approx(m["federated"] - 0.95 * m["centralized"], abs=1e-6)
        assert b["pass"] is (m["federated"] >= 0.95 * m["centralized"])
    counted = [c["pass"] for e in result["logs"].values() for c in e["checks"].values()]
    assert (result["passed"], result["missed"]) == (counted.count(True), counted.count(False))


def test_target_c_and_an_undefined_metric() -> None:
    c = lq.check("c", {"centralized": 0.8, "federated": 0.7, "hybrid": 0.8, "local": 0.6})
    assert c["pass"] is False and c["margin"] == 0.0  # a tie does not beat centralized
    c = lq.check("c", {"centralized": 0.8, "federated": 0.7, "hybrid": 0.85, "local": 0.6})
    assert c["pass"] is True and c["margin"] == pytest.approx(0.05)
    a = lq.check("a", {"centralized": 0.8, "federated": None, "hybrid": 0.85, "local": 0.6})
    assert a["pass"] is None and a["margin"] is None


def test_the_outage_run_reports_during_and_after(result: dict) -> None:
    assert result["logs"]["phishing"]["outage"] is None  # outage runs: the fraud and iot logs
    outage = result["logs"]["fraud"]["outage"]
    assert outage["outage"] == {"fraction": 0.5, "start": 0.3, "end": 0.6}
    for arch in lq.ARCHS:
        row = outage["architectures"][arch]
        assert row["metric_without_outage"] == result["logs"]["fraud"]["architectures"][arch][
            "metric"
        ]  # fmt: skip
        for key in ("metric", "metric_during", "metric_after"):
            assert 0.0 <= row[key] <= 1.0, (arch, key)
    assert outage["architectures"]["local"]["scored_disconnected"] > 0


def test_json_flag_prints_one_object_and_logs_are_reused(tmp_path: Path, capsys) -> None:
    argv = ["--logs", "phishing", "--work", str(tmp_path), "--json", "--no-outage"]
    assert lq.main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert set(first["logs"]) == {"phishing"}
    assert lq.main(argv) == 0
    captured = capsys.readouterr()
    assert "phishing: reused" in captured.err
    again = json.loads(captured.out)
    assert again["logs"]["phishing"]["architectures"] == first["logs"]["phishing"]["architectures"]


def test_the_held_out_logs_are_not_the_tables_and_extra_flags_reach_compare() -> None:
    """Methods are chosen on ``--held-out``: none of its logs may be one the table reports."""
    assert not {log.name for log in lq.HELD_OUT} & {log.name for log in lq.LOGS}
    assert not {log.command for log in lq.HELD_OUT} & {log.command for log in lq.LOGS}
    assert lq.compare_defaults(["--strategy", "fedavgm"])["strategy"] == "fedavgm"
    assert lq.compare_defaults(["--no-shift-global"])["shift_global"] is False
    with pytest.raises(SystemExit):
        lq.main(["--held-out", "--logs", "phish5", "--extra", "--no-such-flag"])
