"""Drift report: one self-contained HTML page (a plot per feature, reference vs current) and its MLflow run."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from hybridml.core.drift import DriftResult, FeatureDrift, PredictionDrift

# MLflow metric keys allow letters, digits, _ - . / and spaces; anything else in a feature name becomes _.
_METRIC_KEY = re.compile(r"[^\w\-./ ]")


@dataclass(frozen=True)
class ReportContext:
    """What the report is about: the model version and where the window came from."""

    model: str
    version: int | str
    source: str


def _plot(title: str, labels: tuple[str, ...], reference: tuple[float, ...], current: tuple[float, ...]) -> str:
    """A bar chart of reference vs current shares as a base64 PNG (matplotlib's object API: no global state)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 2.6), dpi=80)
    axes = figure.subplots()
    positions = range(len(labels))
    width = 0.4
    axes.bar([p - width / 2 for p in positions], reference, width, label="reference", color="#8da0cb")
    axes.bar([p + width / 2 for p in positions], current, width, label="current", color="#fc8d62")
    axes.set_xticks(list(positions), labels, rotation=30, ha="right", fontsize=7)
    axes.set_ylabel("share")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _row(name: str, f: FeatureDrift) -> str:
    cells = [
        html.escape(name),
        f.kind,
        f.test,
        f"{f.psi:.4f}",
        f"{f.p_value:.3g}",
        f"{f.adjusted_p:.3g}",
        f"{f.missing_reference:.3f} → {f.missing_current:.3f}",
        f"{f.unknown_rate:.3f}",
        "<b>yes</b>" if f.drifted else "no",
    ]
    style = ' class="drifted"' if f.drifted else ""
    return f"<tr{style}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _section(title: str, item: FeatureDrift | PredictionDrift) -> str:
    if not item.labels:
        return f"<h3>{html.escape(title)}</h3><p>not tested: no value in the window or in the reference</p>"
    image = _plot(title, item.labels, item.reference_shares, item.current_shares)
    verdict = "drifted" if item.drifted else "no drift"
    return (
        f"<h3>{html.escape(title)} — {verdict}</h3>"
        f"<p>PSI {item.psi:.4f}, {item.test} statistic {item.statistic:.4g}, p-value {item.p_value:.3g}</p>"
        f'<img alt="{html.escape(title)}: reference vs current" src="data:image/png;base64,{image}">'
    )


def render_html(result: DriftResult, context: ReportContext) -> str:
    """The report as one HTML page with inline images (no external files), for a browser or an MLflow artifact."""
    drifted = result.drifted_features
    head = (
        f"<h1>Drift of {html.escape(context.model)} version {html.escape(str(context.version))}</h1>"
        f"<p>Window: {result.rows} rows from {html.escape(context.source)}. Rule: adjusted p-value "
        f"({result.correction}) &lt; {result.alpha} and PSI &ge; {result.min_psi}.</p>"
        f"<p><b>{'Drift' if result.drift else 'No drift'}</b>"
        + (f": {html.escape(', '.join(drifted))}" if drifted else "")
        + "</p>"
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    header = "".join(
        f"<th>{h}</th>"
        for h in ("feature", "kind", "test", "PSI", "p-value", "adjusted p", "missing ref → now", "unknown", "drifted")
    )
    table = f"<table><tr>{header}</tr>{''.join(_row(n, f) for n, f in result.features.items())}</table>"
    prediction = "" if result.prediction is None else _section("predicted scores", result.prediction)
    sections = "".join(_section(name, f) for name, f in result.features.items())
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}tr.drifted{background:#fde0d0}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>drift {html.escape(context.model)}</title>"
        f"<style>{style}</style></head><body>{head}"
        + (f"<ul>{notes}</ul>" if notes else "")
        + f"{table}{prediction}<h2>Per feature</h2>{sections}</body></html>"
    )


def metrics_of(result: DriftResult) -> dict[str, float]:
    """Figures of a drift result as MLflow metrics (per feature PSI and adjusted p-value)."""
    metrics: dict[str, float] = {
        "drift": float(result.drift),
        "drifted_features": float(len(result.drifted_features)),
        "window_rows": float(result.rows),
    }
    for name, f in result.features.items():
        key = _METRIC_KEY.sub("_", name)
        metrics[f"psi.{key}"] = f.psi
        metrics[f"adjusted_p.{key}"] = f.adjusted_p
    if result.prediction is not None:
        metrics["prediction_psi"] = result.prediction.psi
    return metrics


def log_to_mlflow(
    tracker: Any, result: DriftResult, context: ReportContext, page: str, *, training_run_id: str | None
) -> str:
    """Log the report as a run of the tracker's experiment, tagged with the model version; return its run id.

    Args:
        tracker: a :class:`hybridml.adapters.tracking.Tracker`.
        result: the drift result.
        context: model, version and window source.
        page: the HTML from :func:`render_html`.
        training_run_id: the version's training run, recorded as a tag to link the two.
    """
    tags = {
        "hybridml.role": "drift",
        "hybridml.model": context.model,
        "hybridml.model_version": str(context.version),
        "hybridml.drift": str(result.drift).lower(),
    }
    if training_run_id:
        tags["hybridml.training_run_id"] = training_run_id
    run_id: str = tracker.start_run(f"drift-{context.model}-v{context.version}", tags)
    with tracker.guard(run_id):
        tracker.log(
            run_id,
            params={"source": context.source, "alpha": result.alpha, "min_psi": result.min_psi},
            metrics=metrics_of(result),
        )
        tracker.log_text(run_id, page, "drift/report.html")
        tracker.log_text(run_id, json.dumps(result.to_dict(), indent=2, default=str), "drift/result.json")
        tracker.end_run(run_id)
    return run_id
