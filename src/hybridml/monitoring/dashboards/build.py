"""The hybridml Grafana dashboard, built with grafana-foundation-sdk, and the ConfigMap the Grafana sidecar loads.

``python -m hybridml.monitoring.dashboards.build`` rewrites ``hybridml.json`` and ``configmap.yaml`` beside this
file; ``--check`` only compares them with a fresh build (exit 1 when they differ). Request, error and latency
panels read the recording rules of ``monitoring/prometheus/rules.yaml`` (the same figures the alerts use);
drift and online-quality panels read the watch job's gauges.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
DASHBOARD_PATH = HERE / "hybridml.json"
CONFIGMAP_PATH = HERE / "configmap.yaml"
UID = "hybridml"
CONFIGMAP_NAME = "hybridml-grafana-dashboard"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# `$model` is a multi-value variable whose "All" is `.*`, so every query selects with `model=~"$model"`.
M = 'model=~"$model"'


@dataclass(frozen=True)
class Query:
    """One panel target: a PromQL expression and its legend."""

    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    """One panel: title, description, kind (timeseries or stat), unit, width and its queries."""

    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    min: float | None = None
    max: float | None = None


ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Traffic",
        (
            PanelSpec(
                "Requests per second",
                "Requests callers sent, by variant, version and HTTP status (the router's count where one fronts the"
                " variants; shadow copies left out). Recording rule hybridml:requests:rate5m.",
                (
                    Query(
                        f"sum by (variant, version, code) (hybridml:requests:rate5m{{{M}}})",
                        "{{variant}} v{{version}} {{code}}",
                    ),
                ),
                unit="reqps",
            ),
            PanelSpec(
                "5xx share",
                "Share of requests answered with a 5xx status, by variant (4xx are the callers' mistakes). Alert"
                " HybridmlHighErrorRate above 5 %.",
                (Query(f"hybridml:request_errors:ratio_rate5m{{{M}}}", "{{variant}} v{{version}}"),),
                unit="percentunit",
                min=0,
            ),
            PanelSpec(
                "Latency p50 and p99",
                "Server-side request time (stage total), by variant. Alert HybridmlHighLatencyP99 above 100 ms.",
                (
                    Query(f"hybridml:request_latency_seconds:p50_5m{{{M}}}", "p50 {{variant}} v{{version}}"),
                    Query(f"hybridml:request_latency_seconds:p99_5m{{{M}}}", "p99 {{variant}} v{{version}}"),
                ),
                unit="s",
                min=0,
            ),
            PanelSpec(
                "Canary share",
                "Percent of requests the router sends to the canary (0 after a promote, a rollback or a canary crash).",
                (Query(f"max by (model) (hybridml_canary_percent{{{M}}})", "{{model}}"),),
                unit="percent",
                kind="stat",
                width=6,
                min=0,
                max=100,
            ),
            PanelSpec(
                "Unknown categories per second",
                "Category values the model's schema does not know (scored as missing), by feature.",
                (
                    Query(
                        f"sum by (feature) (rate(hybridml_unknown_categories_total{{{M}}}[$__rate_interval]))",
                        "{{feature}}",
                    ),
                ),
                unit="short",
                width=6,
            ),
        ),
    ),
    (
        "Canary vs stable",
        (
            PanelSpec(
                "Canary vs stable: 5xx share and p99",
                "The figures HybridmlCanaryWorseThanStable compares: the canary's 5xx share more than 2 points above"
                " stable's, or its p99 more than 1.5 x stable's.",
                (
                    Query(f'hybridml:request_errors:ratio_rate5m{{{M},variant=~"stable|canary"}}', "5xx {{variant}}"),
                    Query(
                        f'hybridml:request_latency_seconds:p99_5m{{{M},variant=~"stable|canary"}}', "p99 {{variant}}"
                    ),
                ),
                unit="short",
            ),
            PanelSpec(
                "Mean predicted score by variant",
                "Mean positive-class probability of the rows each variant scored (a shift here is prediction drift).",
                (
                    Query(
                        f"sum by (variant, version) (rate(hybridml_prediction_score_sum{{{M}}}[$__rate_interval]))\n"
                        f"/ sum by (variant, version) (rate(hybridml_prediction_score_count{{{M}}}[$__rate_interval]))",
                        "{{variant}} v{{version}}",
                    ),
                ),
                unit="percentunit",
                min=0,
                max=1,
            ),
        ),
    ),
    (
        "Drift",
        (
            PanelSpec(
                "Drift detected",
                "1 when the watch job's last window drifted from the reference profile (after the multiple-testing"
                " correction), with the number of drifted features. Alert HybridmlDriftDetected.",
                (
                    Query(f"max by (model, version) (hybridml_drift_detected{{{M}}})", "detected v{{version}}"),
                    Query(f"sum by (model, version) (hybridml_drift_feature_drifted{{{M}}})", "features v{{version}}"),
                ),
                kind="stat",
                width=6,
            ),
            PanelSpec(
                "Window rows",
                "Rows in the watch job's last window (drift figures over few rows are noisy).",
                (Query(f"max by (version) (hybridml_drift_window_rows{{{M}}})", "v{{version}}"),),
                kind="stat",
                width=6,
            ),
            PanelSpec(
                "Prediction PSI",
                "Population stability index of the predicted scores against the reference profile's.",
                (Query(f"max by (version) (hybridml_prediction_psi{{{M}}})", "v{{version}}"),),
                width=12,
                min=0,
            ),
            PanelSpec(
                "PSI per feature",
                "Population stability index of each feature against the reference profile (0.1: moderate shift,"
                " 0.25: large).",
                (Query(f"max by (version, feature) (hybridml_drift_psi{{{M}}})", "{{feature}} v{{version}}"),),
                min=0,
            ),
            PanelSpec(
                "Adjusted p-value per feature",
                "KS (numeric) or chi-squared (category) p-value of each feature, adjusted for testing every feature.",
                (Query(f"min by (version, feature) (hybridml_drift_pvalue{{{M}}})", "{{feature}} v{{version}}"),),
                unit="short",
                min=0,
                max=1,
            ),
        ),
    ),
    (
        "Online quality",
        (
            PanelSpec(
                "Online ROC AUC with its 95 % interval",
                "ROC AUC of the predictions joined with feedback labels, per variant, with its 95 % interval.",
                (
                    Query(f"hybridml_online_roc_auc{{{M}}}", "AUC {{variant}} v{{version}}"),
                    Query(f"hybridml_online_roc_auc_low{{{M}}}", "low {{variant}} v{{version}}"),
                    Query(f"hybridml_online_roc_auc_high{{{M}}}", "high {{variant}} v{{version}}"),
                ),
                unit="short",
                min=0,
                max=1,
            ),
            PanelSpec(
                "Joined labels",
                "Feedback labels joined with a logged prediction, per variant (the AUC's sample size).",
                (Query(f"max by (variant, version) (hybridml_online_labels{{{M}}})", "{{variant}} v{{version}}"),),
                min=0,
            ),
        ),
    ),
)


def queries() -> list[str]:
    """Every PromQL expression of the dashboard, in panel order."""
    return [query.expr for _, panels in ROWS for panel in panels for query in panel.queries]


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    from grafana_foundation_sdk.builders import common, prometheus, stat, timeseries
    from grafana_foundation_sdk.models import common as common_models
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    if spec.kind == "stat":
        panel: Any = stat.Panel().reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
    else:
        panel = (
            timeseries.Panel()
            .legend(
                common.VizLegendOptions()
                .display_mode(common_models.LegendDisplayMode.TABLE)
                .placement(common_models.LegendPlacement.BOTTOM)
                .show_legend(True)
            )
            .tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
        )
    panel = (
        panel.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DataSourceRef(type_val=DATASOURCE["type"], uid=DATASOURCE["uid"]))
        .unit(spec.unit)
        .height(8)
        .span(spec.width)
    )
    if spec.min is not None:
        panel = panel.min(spec.min)
    if spec.max is not None:
        panel = panel.max(spec.max)
    for i, query in enumerate(spec.queries):
        panel = panel.with_target(
            prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(chr(ord("A") + i)).range()
        )
    return panel


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a plain dict)."""
    from grafana_foundation_sdk.builders import dashboard
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

    board = (
        dashboard.Dashboard("hybridml models")
        .uid(UID)
        .description(
            "Requests, latency, errors, canary vs stable, input drift and online quality of hybridml model servers."
            " Generated by src/hybridml/monitoring/dashboards/build.py; edit that, not the JSON."
        )
        .tags(["hybridml", "mlops"])
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .readonly()
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("model")
            .label("Model")
            .datasource(DataSourceRef(type_val=DATASOURCE["type"], uid=DATASOURCE["uid"]))
            .query("label_values(hybridml_prediction_score_count, model)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    panel_id = 0
    for title, panels in ROWS:
        panel_id += 1  # Grafana links and embeds panels by id: fixed ids keep links stable across rebuilds
        board = board.with_row(dashboard.Row(title).id(panel_id))
        for spec in panels:
            panel_id += 1
            board = board.with_panel(_panel(spec, panel_id))
    model: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return model


def dashboard_json(model: dict[str, Any]) -> str:
    """The dashboard file's text: sorted keys, two-space indent, a final newline (stable diffs)."""
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (the dashboard JSON) as literal blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _string)


def configmap(model: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap the Grafana sidecar picks up (label ``grafana_dashboard: "1"``), holding the dashboard JSON."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP_NAME,
            "labels": {
                "app.kubernetes.io/name": "hybridml",
                "app.kubernetes.io/component": "monitoring",
                "grafana_dashboard": "1",
            },
        },
        "data": {"hybridml.json": dashboard_json(model)},
    }


def configmap_yaml(model: dict[str, Any]) -> str:
    """The ConfigMap file's text, with a header saying where it comes from."""
    header = "# Generated by `python -m hybridml.monitoring.dashboards.build` from build.py: do not edit.\n"
    return header + yaml.dump(configmap(model), Dumper=_Dumper, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) hybridml.json and configmap.yaml; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m hybridml.monitoring.dashboards.build", description="Build the hybridml Grafana dashboard."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files differ from a build")
    args = parser.parse_args(argv)
    model = build()
    files = {DASHBOARD_PATH: dashboard_json(model), CONFIGMAP_PATH: configmap_yaml(model)}
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(
                f"{path} differs from a fresh build: run python -m hybridml.monitoring.dashboards.build",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
