"""deploy/prometheus/alerts.yml names only metrics (and labels) the orchestrator exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import Counter, Histogram, MetricWrapperBase

from orchestrator.metrics import SagaMetrics

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
_METRIC = re.compile(r"\bsagaline_[a-z0-9_]+\b")
# `max by (workflow, state) (sagaline_x)`: the labels an aggregation keeps.
_BY = re.compile(r"\bby\s*\(([^)]*)\)\s*\(\s*(?:increase\(|rate\()?\s*(sagaline_[a-z0-9_]+)")


def exported() -> dict[str, set[str]]:
    """Every series name SagaMetrics can expose, with the labels it carries."""
    metrics = SagaMetrics(CollectorRegistry())
    names: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        base = metric._name
        labels = set(metric._labelnames)
        if isinstance(metric, Counter):
            suffixes = ["_total", "_created"]
        elif isinstance(metric, Histogram):
            suffixes = ["_bucket", "_count", "_sum", "_created"]
            names[base + "_bucket"] = labels | {"le"}
        else:
            suffixes = [""]
        for suffix in suffixes:
            names.setdefault(base + suffix, labels)
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_file_has_rules() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names)) >= 4
    for needed in ("sagaline_parked_messages", "sagaline_outbox_oldest_age_seconds"):
        assert any(needed in rule["expr"] for rule in rules())


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_metric_and_label_exists(rule: dict[str, Any]) -> None:
    known = exported()
    used = set(_METRIC.findall(rule["expr"]))
    assert used, rule["expr"]
    assert used <= set(known), sorted(used - set(known))
    for labels, metric in _BY.findall(rule["expr"]):
        wanted = {label.strip() for label in labels.split(",") if label.strip()}
        assert wanted <= known[metric], (metric, sorted(wanted - known[metric]))


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_rule_is_complete(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    assert rule["annotations"]["summary"]
    if "for" in rule:
        assert re.fullmatch(r"\d+[smh]", rule["for"])
