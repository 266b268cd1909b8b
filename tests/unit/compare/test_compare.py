"""`prism compare`'s simulation engine and report, in-process (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prism.cli import main
from prism.compare.engine import Outage, SimConfig, simulate
from prism.compare.stream import EVENT, LABEL, load_stream


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("compare")
    out = {}
    for name, sites, labels in (("one", 1, "inline"), ("four", 4, "late")):
        path = tmp / f"{name}.avro"
        assert main(["datagen", "fraud", "--events", "3000", "--sites", str(sites), "--regions",
                     "1", "--seed", "3", "--fraud-rate", "0.05", "--labels", labels,
                     "--out", str(path)]) == 0  # fmt: skip
        out[name] = path
    return out


def test_json_report_has_the_stable_keys_for_every_architecture(logs, capsys):
    assert main(["compare", "--data", str(logs["four"]), "--json", "--summary-every", "100"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["events"] == 3000 and report["sites"] == 4
    assert set(report["architectures"]) == {"centralized", "federated", "hybrid", "local"}
    for name, a in report["architectures"].items():
        assert a["metric_name"] == "roc_auc" and 0.0 <= a["metric"] <= 1.0
        for key in ("ratio_to_centralized", "bytes_moved", "merges", "f1", "precision",
                    "recall", "staleness_mean", "windowed", "scores_by_source"):  # fmt: skip
            assert key in a, (name, key)
        assert sum(a["scores_by_source"].values()) == 3000
    a = report["architectures"]
    assert a["centralized"]["ratio_to_centralized"] == 1.0
    assert a["local"]["bytes_moved"] == 0 and a["local"]["merges"] == 0
    assert a["federated"]["merges"] > 0 and a["federated"]["bytes"]["raw"] == 0
    assert a["centralized"]["bytes_moved"] > a["hybrid"]["bytes"]["raw"] > 0


def test_centralized_and_federated_with_one_site_coincide(logs):
    stream = load_stream(logs["one"])
    runs = simulate(stream, SimConfig(spec_name="fraud-linear", summary_every=1, round_size=1,
                                      architectures=("centralized", "federated"),
                                      quantize="float64", deltas=None))  # fmt: skip
    np.testing.assert_allclose(runs["federated"].scores, runs["centralized"].scores, atol=1e-9)
    assert runs["federated"].sources.count("global") == len(stream) - 1
    assert runs["federated"].merges == int(stream.labelled.sum())


def test_an_outage_cuts_federated_updates_while_local_and_hybrid_keep_scoring(logs):
    stream = load_stream(logs["four"])
    base = SimConfig(spec_name="fraud-linear", summary_every=50, round_size=2, seed=1)
    calm = simulate(stream, base)
    cut = simulate(stream, SimConfig(**{**vars(base), "outage": Outage(0.5, 0.2, 0.8)}))
    window = range(int(0.2 * 3000), int(0.8 * 3000))
    calm_merges = sum(1 for k in calm["federated"].merged_at if k in window)
    assert cut["federated"].merges_during_outage < 0.8 * calm_merges  # fewer updates
    assert cut["federated"].summaries == calm["federated"].summaries  # none lost: sent late
    for name in ("local", "hybrid"):
        assert all(cut[name].sources), name  # every event scored
        assert cut[name].scored_disconnected > 0
    # hybrid sites cut off fall back to their local model
    off = [i for i in window if cut["hybrid"].sources[i] == "local"]
    assert len(off) >= cut["hybrid"].scored_disconnected - 10


def test_the_png_is_written(logs, tmp_path):
    png = tmp_path / "compare.png"
    assert (
        main(
            [
                "compare",
                "--data",
                str(logs["four"]),
                "--plot",
                str(png),
                "--no-progress",
                "--outage",
                "0.5:0.3:0.6",
                "--architectures",
                "centralized,local",
            ]
        )
        == 0
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_label_delay_moves_every_label_n_events_later(logs):
    stream = load_stream(logs["one"], label_delay=10)
    position = {step: k for k, step in enumerate(stream.steps)}
    events_before = np.cumsum([kind == EVENT for kind, _ in stream.steps])
    for i in range(0, 2900, 97):
        assert events_before[position[(LABEL, i)]] == i + 11  # the event itself + 10 more


@pytest.mark.parametrize(
    "flags",
    [["--architectures", "central"], ["--outage", "2:0:1"], ["--summary-every", "0"],
     ["--task", "iot"]],
)  # fmt: skip
def test_bad_flags_are_usage_errors(logs, flags, capsys):
    assert main(["compare", "--data", str(logs["one"]), *flags]) == 2
    assert "prism: error" in capsys.readouterr().err
