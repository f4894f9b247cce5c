"""The Grafana dashboard: committed files equal a fresh build; every query parses and names only real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from hybridml.monitoring.dashboards import build
from hybridml.monitoring.exporter import Gauges
from hybridml.monitoring.prometheus import load_resource
from hybridml.serving.metrics import ServingMetrics
from hybridml.serving.router import RouterApp, Worker

# PromQL words that look like names: functions, aggregations, operators and modifiers.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "rate", "increase", "histogram_quantile", "label_replace", "last_over_time", "offset", "bool",
}  # fmt: skip


def _series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can export (counter and histogram families with their suffixes)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


def served_metrics() -> set[str]:
    """Names the model server and its router really export (built from their own registries, not a list)."""
    worker = CollectorRegistry()
    ServingMetrics(worker, "m", "1", "stable", None)
    router = RouterApp("m", {"stable": Worker("stable", "1", Path("/nonexistent.sock"))})
    return _series_names(worker) | _series_names(router.registry)


def watch_job_metrics() -> set[str]:
    """Names the watch job (hybridml monitor watch) exports, from its own gauges."""
    registry = CollectorRegistry()
    Gauges.on(registry)
    return _series_names(registry)


def recorded_metrics() -> set[str]:
    return {
        rule["record"] for group in load_resource()["spec"]["groups"] for rule in group["rules"] if "record" in rule
    }


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers outside strings, label matchers and grouping lists."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {name for name in names if name not in PROMQL_WORDS and not re.search(rf"\b{re.escape(name)}\s*\(", text)}


def concrete(expr: str) -> str:
    """The expression as Grafana sends it: one model chosen, the rate interval resolved."""
    return expr.replace("$model", "cancer").replace("$__rate_interval", "1m")


def test_committed_dashboard_and_configmap_equal_a_fresh_build() -> None:
    model = build.build()
    assert build.DASHBOARD_PATH.read_text() == build.dashboard_json(model)
    assert build.CONFIGMAP_PATH.read_text() == build.configmap_yaml(model)
    assert build.main(["--check"]) == 0
    configmap = yaml.safe_load(build.CONFIGMAP_PATH.read_text())
    assert configmap["kind"] == "ConfigMap" and configmap["apiVersion"] == "v1"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["hybridml.json"]) == model


def test_check_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "hybridml.json"
    stale.write_text("{}\n")
    monkeypatch.setattr(build, "DASHBOARD_PATH", stale)
    monkeypatch.setattr(build, "CONFIGMAP_PATH", tmp_path / "configmap.yaml")
    assert build.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert f"{stale} differs from a fresh build" in err and "configmap.yaml differs" in err
    assert build.main([]) == 0
    assert build.main(["--check"]) == 0
    assert stale.read_text() == build.dashboard_json(build.build())


def test_dashboard_has_the_variables_panels_and_fixed_ids() -> None:
    model = build.build()
    assert model["uid"] == "hybridml"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["query"] == "label_values(hybridml_prediction_score_count, model)"
    assert variables["model"]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert (variables["model"]["multi"], variables["model"]["includeAll"], variables["model"]["allValue"]) == (
        True,
        True,
        ".*",
    )
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert [p["id"] for p in model["panels"]] == list(range(1, len(model["panels"]) + 1))
    titles = {p["title"] for p in panels}
    for needed in (
        "Requests per second", "5xx share", "Latency p50 and p99", "Canary share", "Unknown categories per second",
        "Canary vs stable: 5xx share and p99", "Drift detected", "PSI per feature",
        "Online ROC AUC with its 95 % interval",
    ):  # fmt: skip
        assert needed in titles
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'model=~"$model"' in target["expr"], (panel["title"], target["expr"])
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    assert exprs == build.queries()


def test_every_query_names_only_metrics_that_exist() -> None:
    known = served_metrics() | watch_job_metrics() | recorded_metrics()
    # The extraction itself: names inside strings, matchers and grouping lists are not metrics.
    assert metric_names('sum by (model, le) (rate(x_total{a="b c",d=~"$e"}[5m])) / on (f) y') == {"x_total", "y"}
    used = set().union(*(metric_names(concrete(expr)) for expr in build.queries()))
    assert used - known == set()
    # Each of these is on the dashboard (the list: requests, latency, errors, canary, drift, online AUC).
    for name in (
        "hybridml:requests:rate5m", "hybridml:request_errors:ratio_rate5m", "hybridml:request_latency_seconds:p99_5m",
        "hybridml_canary_percent", "hybridml_unknown_categories_total", "hybridml_drift_psi", "hybridml_drift_detected",
        "hybridml_online_roc_auc", "hybridml_online_roc_auc_low", "hybridml_online_roc_auc_high",
    ):  # fmt: skip
        assert name in used, name


def test_every_query_parses(tmp_path: Path) -> None:
    # promtool has no parse-only command for an expression: every query becomes a recording rule and
    # `promtool check rules` parses them all.
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool is not installed here (CI installs it from Debian: .ci/run); skipping")
        pytest.skip("promtool not installed")
    rules = [{"record": f"hybridml_dashboard:query{i}", "expr": concrete(e)} for i, e in enumerate(build.queries())]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
    # And the check does catch a broken query.
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [{"record": "x", "expr": "sum by (a (b)"}]}]}))
    broken = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert broken.returncode == 1
