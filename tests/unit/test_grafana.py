"""The Grafana provisioning of deploy/grafana and docker-compose.yml agree with each other.

That the dashboard's queries name metrics the services really expose is checked
against live scrapes in tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers.promql import metric_names

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "prism.json"


def compose_grafana() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]


def mounts() -> dict[str, str]:
    """Container path -> repository path of the grafana service's bind mounts."""
    out = {}
    for volume in compose_grafana()["volumes"]:
        src, dst, *_ = volume.split(":")
        out[dst] = str((ROOT / src).resolve())
    return out


def in_container(path: str) -> Path:
    """The repository file a path inside the grafana container is."""
    for dst, src in sorted(mounts().items(), key=lambda kv: -len(kv[0])):
        if path == dst or path.startswith(dst + "/"):
            return Path(src) / path[len(dst) :].lstrip("/")
    raise AssertionError(f"{path} is not mounted into the grafana container")


def test_grafana_is_pinned_official_and_only_in_the_monitoring_profile() -> None:
    service = compose_grafana()
    image, tag = service["image"].split(":")
    assert image == "grafana/grafana-oss" and tag[0].isdigit() and tag != "latest"
    assert service["profiles"] == ["monitoring"]
    assert "/etc/grafana/provisioning" in mounts()


def test_the_dashboard_provider_loads_the_dashboard_file() -> None:
    provider_files = list((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
    assert provider_files
    for f in provider_files:
        config = yaml.safe_load(f.read_text())
        assert config["apiVersion"] == 1
        [provider] = config["providers"]
        assert provider["type"] == "file"
        folder = in_container(provider["options"]["path"])
        assert DASHBOARD.resolve() in {p.resolve() for p in folder.glob("*.json")}
    assert in_container("/etc/grafana/provisioning").resolve() == (GRAFANA / "provisioning")


def test_every_panel_reads_the_provisioned_prometheus_datasource() -> None:
    [source] = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            assert metric_names(target["expr"]), (panel["title"], target["expr"])


def test_the_dashboard_shows_what_an_operator_asks_first() -> None:
    names = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            names |= metric_names(target["expr"])
    assert {
        "prism_events_total",  # throughput
        "prism_consumer_lag_records",  # lag
        "prism_dead_letters_total",  # dead letters by reason
        "prism_merge_rounds_total",  # merge rounds
        "prism_model_metric_ratio",  # model metric per architecture: centralized
        "prism_edge_model_metric_ratio",  # ... and federated / hybrid
        "prism_edge_fallback_ratio",  # fallback share
    } <= names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (service, kind) (rate(prism_events_total{kind="x y"}[1m]))',
         {"prism_events_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket[5m])))",
         {"a_seconds_bucket"}),
        ('sum(rate(x_total{source="local"}[5m])) / sum(rate(x_total[5m])) * 1e3',
         {"x_total"}),
        ("a_bytes and on (instance) b_info offset 5m", {"a_bytes", "b_info"}),
        ('max by (model) (m_ratio{metric="roc_auc"}) > bool 0.5', {"m_ratio"}),
    ],
)  # fmt: skip
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
