"""`prism compare --stack`: the same comparison through the real services agrees."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.services import service_env

from prism.cli import main
from prism.compare.stack import TOLERANCE, _ArchitectureOnStack
from prism.compare.stream import load_stream
from runtime.settings import Settings

pytestmark = pytest.mark.integration


def test_the_stack_run_agrees_with_the_in_process_simulation(
    test_settings: Settings, tmp_path: Path, monkeypatch, capsys
):
    log = tmp_path / "small.avro"
    # 217 frauds in 3,000 events: enough positives for a ROC AUC that a few scores do not swing
    assert main(["datagen", "fraud", "--events", "3000", "--sites", "3", "--regions", "1",
                 "--seed", "3", "--labels", "inline", "--fraud-rate", "0.12",
                 "--out", str(log)]) == 0  # fmt: skip
    capsys.readouterr()
    assert load_stream(log).labels.sum() >= 200
    for key, value in service_env(test_settings).items():
        if key.startswith("PRISM_"):
            monkeypatch.setenv(key, value)
    assert main(["compare", "--data", str(log), "--stack", "--summary-every", "100", "--json",
                 "--stack-timeout", "300"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["engine"] == "stack"
    agreement = report["agreement"]
    with capsys.disabled():  # the measured agreement, in the test log
        print({name: round(a["diff"], 4) for name, a in agreement.items()})
    assert set(agreement) == {"centralized", "federated", "hybrid", "local"}
    for name, a in agreement.items():
        assert a["diff"] <= TOLERANCE[name], (name, a)
    archs = report["architectures"]
    assert archs["federated"]["merges"] > 0 and archs["local"]["merges"] == 0
    assert archs["centralized"]["scores_by_source"] == {"central": 3000}
    assert sum(archs["hybrid"]["scores_by_source"].values()) == 3000
    assert archs["hybrid"]["bytes"]["raw"] > 0  # the forwarded sample travelled


#: How late the slow fleet starts: longer than the 16 s a merger on an idle timer waited;
#: on a machine at load 20-44 the agents took 25 s to start.
LATE_S = 20.0


def test_the_merger_waits_for_a_fleet_that_starts_late(
    test_settings: Settings, tmp_path: Path, monkeypatch, capsys
):
    """The merger stays until the fleet is done and it has read every summary, however long
    the agents take to start: a merger that left on an idle timer before the first summary
    made a run under load read 0 global models back."""
    log = tmp_path / "late.avro"
    assert main(["datagen", "fraud", "--events", "1200", "--sites", "3", "--regions", "1",
                 "--seed", "4", "--labels", "inline", "--out", str(log)]) == 0  # fmt: skip
    capsys.readouterr()
    for key, value in service_env(test_settings).items():
        if key.startswith("PRISM_"):
            monkeypatch.setenv(key, value)
    start = _ArchitectureOnStack._start

    def slow_fleet(self: _ArchitectureOnStack, name: str, *args: str):
        if name == "fleet":
            time.sleep(LATE_S)  # the machine is busy: the agents start late
        return start(self, name, *args)

    monkeypatch.setattr(_ArchitectureOnStack, "_start", slow_fleet)
    assert main(["compare", "--data", str(log), "--stack", "--architectures", "federated",
                 "--summary-every", "100", "--json", "--stack-timeout", "300"]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    federated = report["architectures"]["federated"]
    assert federated["summaries"] > 0 and federated["merges"] > 0, federated
