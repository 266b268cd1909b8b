"""`prism up` writes a Prometheus scrape config for the metrics ports it plans."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from prism.commands.up import EDGE_PORT, PORTS, plan
from prism.services.scrape import write_scrape_config


def up_args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"task": "both", "edges": 2, "round_size": None,
                                 "edge_rate": 200.0, "edge_mode": "private", **kw})  # fmt: skip


def test_every_planned_metrics_port_is_a_target_labelled_with_its_service(tmp_path: Path) -> None:
    services = plan(up_args(), tmp_path / "edges.avro", ["s0", "s1"])
    config_path, targets_path = write_scrape_config(tmp_path / "up", services)
    groups = json.loads(targets_path.read_text())
    got = {g["labels"]["prism_service"]: (g["targets"], g["labels"]["job"]) for g in groups}
    assert got == {
        "central-fraud": ([f"127.0.0.1:{PORTS['central-fraud']}"], "central"),
        "central-iot": ([f"127.0.0.1:{PORTS['central-iot']}"], "central"),
        "merger": ([f"127.0.0.1:{PORTS['merger']}"], "merger"),
        "edge-0": ([f"127.0.0.1:{EDGE_PORT}"], "edge"),
        "edge-1": ([f"127.0.0.1:{EDGE_PORT + 1}"], "edge"),
    }
    # the ports are the ones the services are told to serve on
    for s in services:
        assert s.argv[s.argv.index("--metrics-port") + 1] == str(s.metrics_port)
    config = yaml.safe_load(config_path.read_text())
    [job] = config["scrape_configs"]
    assert job["file_sd_configs"] == [{"files": [str(targets_path)]}]


def test_a_plan_without_edges_has_no_edge_targets(tmp_path: Path) -> None:
    _, targets = write_scrape_config(tmp_path, plan(up_args(task="fraud", edges=0), tmp_path, []))
    assert [g["labels"]["prism_service"] for g in json.loads(targets.read_text())] == [
        "central-fraud",
        "merger",
    ]


def test_a_hybrid_plan_forwards_from_every_edge_and_runs_the_shadow_job(tmp_path: Path) -> None:
    """`--edge-mode hybrid`: each edge forwards (`--mode hybrid`), and the shadow job that
    pairs the edge and central scores runs as its own Redis user, scraped as ``shadow``."""
    services = {s.name: s for s in plan(up_args(edge_mode="hybrid"), tmp_path, ["s0", "s1"])}
    for edge in ("edge-0", "edge-1"):
        argv = services[edge].argv
        assert argv[argv.index("--mode") + 1] == "hybrid"
    shadow = services["shadow"]
    assert shadow.argv[:2] == ["shadow", "run"] and shadow.redis_role == "shadow"
    assert shadow.signs_for == []  # it produces dead letters only: nothing to sign
    _, targets = write_scrape_config(tmp_path / "up", list(services.values()))
    jobs = {
        g["labels"]["prism_service"]: g["labels"]["job"] for g in json.loads(targets.read_text())
    }
    assert jobs["shadow"] == "shadow" and set(jobs) == set(services)
    private = plan(up_args(), tmp_path, ["s0", "s1"])
    assert "shadow" not in {s.name for s in private}
    assert {s.argv[s.argv.index("--mode") + 1] for s in private if s.name.startswith("edge")} == {
        "private"
    }
