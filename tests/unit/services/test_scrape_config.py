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
                                 "edge_rate": 200.0, **kw})  # fmt: skip


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
