"""`prism compare --sweep`: the accuracy/bytes frontier, and the bytes rules behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prism.cli import main
from prism.compare.engine import SimConfig, simulate
from prism.compare.stream import load_stream
from prism.compare.sweep import parse_sweeps


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "four.avro"
    assert main(["datagen", "fraud", "--events", "3000", "--sites", "4", "--regions", "1",
                 "--seed", "3", "--fraud-rate", "0.05", "--out", str(path)]) == 0  # fmt: skip
    return path


def test_the_sweep_prints_one_point_per_setting_with_the_single_runs_figures(log, capsys, tmp_path):
    png = tmp_path / "frontier.png"
    argv = ["compare", "--data", str(log), "--json", "--no-progress", "--plot", str(png),
            "--sweep", "summary-every=100,1000", "--sweep", "quantize=float32,float16"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sweep = report["sweep"]
    assert [(a["name"], a["values"]) for a in sweep["axes"]] == [
        ("summary-every", [100, 1000]),
        ("quantize", ["float32", "float16"]),
    ]
    assert set(sweep["reference"]) == {"centralized", "local"}
    assert sweep["reference"]["local"]["bytes_moved"] == 0
    points = {tuple(p["setting"].values()): p["architectures"] for p in sweep["points"]}
    assert set(points) == {(100, "float32"), (100, "float16"), (1000, "float32"), (1000, "float16")}
    for figures in points.values():
        assert set(figures) == {"federated", "hybrid"}
    fed = {k: v["federated"]["bytes_moved"] for k, v in points.items()}
    assert fed[(1000, "float32")] < fed[(100, "float32")]  # fewer summaries, fewer rounds
    assert fed[(100, "float16")] < fed[(100, "float32")]  # half the float bytes
    # a point is exactly what `prism compare` prints at those flags
    assert main(["compare", "--data", str(log), "--json", "--summary-every", "1000",
                 "--quantize", "float16"]) == 0  # fmt: skip
    single = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["architectures"]
    for name in ("federated", "hybrid"):
        assert points[(1000, "float16")][name]["metric"] == single[name]["metric"]
        assert points[(1000, "float16")][name]["bytes_moved"] == single[name]["bytes_moved"]
    assert sweep["reference"]["centralized"]["metric"] == single["centralized"]["metric"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["summary-every"], "NAME=V1,V2"),
        (["nonsense=1"], "NAME=V1,V2"),
        (["summary-every=0"], "not >= 1"),
        (["quantize=float8"], "not one of"),
        (["forward-sample=2"], r"not in \[0, 1\]"),
        (["personal-pull=1"], r"not in \[0, 1\)"),
        (["summary-every=1", "summary-every=2"], "given twice"),
        (["summary-every=,"], "no values"),
    ],
)
def test_bad_sweeps_say_what_is_wrong(texts, message, log, capsys):
    with pytest.raises(ValueError, match=message):
        parse_sweeps(texts)
    argv = ["compare", "--data", str(log)] + [a for t in texts for a in ("--sweep", t)]
    assert main(argv) == 2  # a usage error, not a traceback
    assert "--sweep" in capsys.readouterr().err


def test_summaries_and_globals_name_their_layout_by_id_once_it_is_known(log):
    """After a site adopts a global of its own layout its summaries drop the layout; each
    site reads a layout's whole announcement once; so bytes per message shrink."""
    stream = load_stream(log)
    config = SimConfig(spec_name="fraud-linear", architectures=("federated",), summary_every=100)
    run = simulate(stream, config)["federated"]
    from edge_agents.learner import EdgeLearner, EdgePolicy
    from models.serialization import weight_summary_record
    from schemas import Codec

    learner = EdgeLearner("fraud-linear", "site-0", EdgePolicy())
    for i in range(100):
        learner.observe(stream.event_ids[i], stream.features[i], bool(stream.labels[i]))
    whole = len(Codec().encode("WeightSummary", weight_summary_record(
        learner.cut(), tier="edge", created_at_ms=0, quantize="float32")))  # fmt: skip
    assert run.summaries > 20 and run.bytes_summaries / run.summaries < 0.75 * whole
    assert run.merges > 5
