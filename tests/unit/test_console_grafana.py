"""The Grafana dashboard (deploy/grafana/dashboards/sagaline.json) queries only metrics the
processes export, and compose provisions it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "sagaline.json"
SOURCES = ("orchestrator", "consumers", "sagaline")
# Metric names as registered in code: the first argument of a prometheus_client constructor.
REGISTERED = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"(sagaline_\w+)\"", re.S)
QUERIED = re.compile(r"\b(sagaline_[a-z0-9_]+)")
SUFFIXES = {
    "Counter": ("", "_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
}


def exported() -> set[str]:
    """Every series name the processes expose, from the constructors in their code."""
    names: set[str] = set()
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            if "testing" in path.name:
                continue  # consumers/testing.py: a test double, not a process's metric
            for kind, name in REGISTERED.findall(path.read_text()):
                base = name.removesuffix("_total") if kind == "Counter" else name
                names |= {base + suffix for suffix in SUFFIXES[kind]}
    return names


def queries() -> list[tuple[str, str]]:
    document = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in document["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_panel_query_names_an_exported_metric() -> None:
    known = exported()
    assert "sagaline_active_sagas" in known and "sagaline_batch_seconds_bucket" in known
    found = queries()
    assert len(found) >= 14
    for title, expr in found:
        named = QUERIED.findall(expr)
        assert named, f"{title}: {expr} names no sagaline metric"
        unknown = [n for n in named if n not in known]
        assert not unknown, f"{title}: {unknown} is not exported by any process"


def test_every_panel_has_a_query_and_the_dashboard_a_stable_uid() -> None:
    document = json.loads(DASHBOARD.read_text())
    assert document["uid"] == "sagaline-sagas"
    assert all(panel.get("targets") for panel in document["panels"])
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))


def test_compose_provisions_grafana_with_the_dashboard_and_prometheus() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./deploy/grafana/dashboards"] == "/var/lib/grafana/dashboards"
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/sagaline.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uid = source["datasources"][0]["uid"]
    document = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in document["panels"]} == {uid}
    scraped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = scraped["scrape_configs"][0]["static_configs"][0]["targets"]
    assert {t.split(":")[0] for t in targets} >= {"orchestrator", "payments"}
