"""`hybridml monitor`: drift of a model's inputs and predictions against its reference profile."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(no_args_is_help=True, help="Drift against the reference profile: drift (one check), watch (a job).")

ModelOption = Annotated[str, typer.Option("--model", help="Registered version: NAME@alias or NAME/VERSION.")]
AlphaOption = Annotated[float, typer.Option(help="Level for the adjusted p-values (a feature drifts below it).")]
MinPsiOption = Annotated[float, typer.Option("--min-psi", help="Minimum PSI for a feature to drift.")]
MinRowsOption = Annotated[int, typer.Option("--min-rows", help="Fewer rows than this are never judged drifted.")]
CorrectionOption = Annotated[str, typer.Option(help="Multiple-testing correction across features: bh or holm.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@contextlib.contextmanager
def _version_bundle(ctx: typer.Context, ref: str) -> Iterator[tuple[Any, Any]]:
    """The registered version ``ref`` and its bundle, downloaded into a temporary directory for the block."""
    from hybridml.cli import _registry
    from hybridml.errors import InvalidInputError

    # MLflow draws a progress bar on stderr for every download; a command's stderr is for its one-line errors.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    registry = _registry(ctx)
    info = registry.resolve(ref)
    with tempfile.TemporaryDirectory(prefix="hybridml-monitor-") as tmp:
        bundle = registry.download(info.name, info.version, Path(tmp) / "bundle")
        if bundle.profile is None:
            raise InvalidInputError(
                f"model {info.name} version {info.version} has no reference profile (saved before profiles"
                " existed): retrain it to monitor drift"
            )
        yield info, bundle


def _config(alpha: float, min_psi: float, correction: str, min_rows: int) -> Any:
    from hybridml.core.drift import DriftConfig

    return DriftConfig(alpha=alpha, min_psi=min_psi, correction=correction, min_rows=min_rows)


def _score_file(bundle: Any, columns: dict[str, Any]) -> Any:
    """The model's scores on a file's rows, for prediction drift."""
    import pandas as pd

    from hybridml.core.data import encode_features
    from hybridml.core.model import load_estimator, positive_scores

    frame = pd.DataFrame(columns)
    return positive_scores(load_estimator(bundle), encode_features(frame, bundle.schema))


def _print_table(payload: dict[str, Any]) -> None:
    from rich.table import Table

    from hybridml.cli import out

    table = Table(title=f"drift of {payload['model']} version {payload['version']} ({payload['rows']} rows)")
    table.add_column("feature", no_wrap=True)  # the one column a reader must see whole
    for column in ("test", "PSI", "p-value", "adjusted p", "missing Δ", "unknown", "drifted"):
        table.add_column(column)
    for name, f in payload["features"].items():
        table.add_row(
            name,
            f["test"],
            f"{f['psi']:.4f}",
            f"{f['p_value']:.3g}",
            f"{f['adjusted_p']:.3g}",
            f"{f['missing_change']:+.3f}",
            f"{f['unknown_rate']:.3f}",
            "[red]yes[/red]" if f["drifted"] else "no",
        )
    out.print(table)
    if payload["prediction"] is not None:
        p = payload["prediction"]
        out.print(f"predictions: PSI {p['psi']:.4f}, p-value {p['p_value']:.3g}, drifted: {p['drifted']}")
    for note in payload["notes"]:
        out.print(f"note: {note}", highlight=False)
    drifted = payload["drifted_features"]
    out.print(f"drift: {'yes (' + ', '.join(drifted) + ')' if drifted else 'no'}", highlight=False)


@app.command("drift")
def drift(
    ctx: typer.Context,
    model: ModelOption,
    data: Annotated[Path | None, typer.Option(help="CSV or Parquet file of rows (a target column is ignored).")] = None,
    payload_log: Annotated[
        Path | None, typer.Option("--payload-log", help="A server's payload log: its last --window rows.")
    ] = None,
    window: Annotated[int | None, typer.Option(help="Last rows to compare (payload log default: 10000).")] = None,
    alpha: AlphaOption = 0.05,
    min_psi: MinPsiOption = 0.1,
    min_rows: MinRowsOption = 100,
    correction: CorrectionOption = "bh",
    report: Annotated[Path | None, typer.Option(help="Write the HTML report (a plot per feature) here.")] = None,
    log_to_mlflow: Annotated[
        bool, typer.Option("--log-to-mlflow", help="Log the report as an MLflow run and note it in the history.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Compare rows (a file, or a payload log's last rows) with the version's reference profile.

    Prints `drift` (true when a feature drifted) and each feature's PSI, p-values and verdict. Exit code 0
    whether or not there is drift: drift is a finding, not an error.
    """
    from hybridml.cli import _emit, _errors
    from hybridml.core.drift import compute_drift
    from hybridml.errors import InvalidInputError, NotFoundError
    from hybridml.monitoring import drift_window
    from hybridml.monitoring.drift_report import ReportContext, render_html

    with _errors(ctx):
        if (data is None) == (payload_log is None):
            raise InvalidInputError("give the rows to compare with --data FILE or --payload-log FILE (one of them)")
        if data is not None and not data.is_file():  # before the registry is asked for anything
            raise NotFoundError(f"data file not found: {data}")
        config = _config(alpha, min_psi, correction, min_rows)
        with _version_bundle(ctx, model) as (info, bundle):
            if payload_log is not None:
                rows = drift_window.from_payload_log(
                    payload_log,
                    bundle.schema,
                    model=info.name,
                    version=str(info.version),
                    size=window if window is not None else drift_window.DEFAULT_WINDOW,
                )
            else:
                assert data is not None
                rows = drift_window.from_file(data, bundle.schema, window)
                rows.scores = _score_file(bundle, rows.columns)
            result = compute_drift(bundle.profile, rows.columns, rows.scores, config)
        context = ReportContext(info.name, info.version, rows.source)
        page = render_html(result, context) if report is not None or log_to_mlflow else None
        if report is not None:
            assert page is not None
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(page, encoding="utf-8")
        run_id = None
        if log_to_mlflow:
            assert page is not None
            run_id = _log(ctx, info, result, context, page)
        payload: dict[str, Any] = {
            "model": info.name,
            "version": info.version,
            "source": rows.source,
            **result.to_dict(),
            "notes": [*rows.notes, *result.notes],
            "report": None if report is None else str(report),
            "mlflow_run_id": run_id,
        }
    if as_json:
        _emit(payload, True)
    else:
        _print_table(payload)


def _log(ctx: typer.Context, info: Any, result: Any, context: Any, page: str) -> str:
    """Log the report to MLflow and note the check in the version's history; the run id."""
    from hybridml.adapters.tracking import Tracker
    from hybridml.cli import _registry, _state
    from hybridml.monitoring.drift_report import log_to_mlflow

    settings = _state(ctx).settings
    experiment = _experiment_of(settings.tracking_uri, info.run_id) or settings.experiment
    run_id = log_to_mlflow(
        Tracker(settings.tracking_uri, experiment), result, context, page, training_run_id=info.run_id
    )
    drifted = result.drifted_features
    detail = f"drift: {len(drifted)} of {len(result.features)} features drifted" + (
        f" ({', '.join(drifted)})" if drifted else ""
    )
    figures = {
        "run": run_id,
        "rows": result.rows,
        "psi": {name: round(f.psi, 4) for name, f in result.features.items() if f.drifted},
        "prediction_psi": None if result.prediction is None else round(result.prediction.psi, 4),
    }
    _registry(ctx).record_event(info.name, info.version, "monitor", detail, reason=json.dumps(figures))
    return run_id


def _experiment_of(tracking_uri: str, run_id: str | None) -> str | None:
    """The experiment of the version's training run (the drift run goes beside it); None if it cannot be read."""
    from hybridml.adapters import mlflow_client
    from hybridml.errors import HybridmlError

    if not run_id:
        return None
    client = mlflow_client.client(tracking_uri)
    try:
        run = mlflow_client.call(lambda: client.get_run(run_id), f"run {run_id}", tracking_uri)
        experiment = mlflow_client.call(
            lambda: client.get_experiment(run.info.experiment_id), f"experiment of run {run_id}", tracking_uri
        )
    except HybridmlError:  # a deleted training run: the configured experiment will do
        return None
    return str(experiment.name)


@app.command("watch")
def watch(
    ctx: typer.Context,
    model: ModelOption,
    payload_log: Annotated[Path, typer.Option("--payload-log", help="The server's payload log to follow.")],
    feedback_log: Annotated[
        Path | None, typer.Option("--feedback-log", help="The server's feedback log: exports online ROC AUC too.")
    ] = None,
    window: Annotated[int, typer.Option(help="Last rows the drift is computed over.")] = 10_000,
    interval: Annotated[float, typer.Option(help="Seconds between two computations.")] = 30.0,
    port: Annotated[int, typer.Option(help="Port of /metrics (0: any free port).")] = 9465,
    host: Annotated[str, typer.Option(help="Address of /metrics.")] = "127.0.0.1",
    alpha: AlphaOption = 0.05,
    min_psi: MinPsiOption = 0.1,
    min_rows: MinRowsOption = 100,
    correction: CorrectionOption = "bh",
) -> None:
    """Follow a payload log and export drift gauges (and online AUC) on /metrics until stopped (SIGTERM, Ctrl-C).

    Prints one JSON line saying where /metrics listens once it does.
    """
    from hybridml.cli import _errors
    from hybridml.monitoring.exporter import DriftExporter, serve_metrics

    with _errors(ctx), _version_bundle(ctx, model) as (info, bundle):
        exporter = DriftExporter(
            profile=bundle.profile,
            schema=bundle.schema,
            model=info.name,
            version=str(info.version),
            payload_log=payload_log,
            feedback_log=feedback_log,
            window=window,
            interval_s=interval,
            config=_config(alpha, min_psi, correction, min_rows),
        )
        server = serve_metrics(exporter.registry, port, host)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    where = {"metrics": f"http://{host}:{server.server_port}/metrics", "model": info.name, "version": info.version}
    typer.echo(json.dumps(where))
    sys.stdout.flush()
    try:
        exporter.run(stop)
    finally:
        server.shutdown()
