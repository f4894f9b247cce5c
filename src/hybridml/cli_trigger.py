"""`hybridml trigger`: start retraining runs on new data, a drift alert or a schedule."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer

from hybridml.errors import HybridmlError, InvalidInputError

app = typer.Typer(no_args_is_help=True, help="Retraining triggers: serve (watch and receive), status.")


def _data_uri(data: str) -> str:
    """A relative path made absolute (the run starts elsewhere); URIs stay as given."""
    if not data or urlparse(data).scheme:
        return data
    return str(Path(data).expanduser().resolve())


def _kfp_arguments(pairs: list[str]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--kfp-arg takes KEY=VALUE, got {pair!r}")
        try:
            arguments[key] = json.loads(value)  # numbers and booleans as such
        except ValueError:
            arguments[key] = value
    return arguments


def record_run(registry: Any, run: dict[str, Any]) -> None:
    """Write into the registered version's history which trigger run made it, from which events and data."""
    if run.get("version") is None:
        return
    figures = {
        "run_id": run["run_id"],
        "data_uri": run["data_uri"],
        "traffic_percent": (run.get("launch") or {}).get("traffic_percent", run["traffic_percent"]),
        "event_count": len(run["events"]),
        "events": run["events"][:5],  # the history keeps 1,000 characters of reason
    }
    detail = f"retrained by trigger run {run['run_id']} ({len(run['events'])} event(s))"
    registry.record_event(run["model"], run["version"], "monitor", detail, reason=json.dumps(figures))


@app.command("serve")
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="Registered model the runs retrain.")],
    watch: Annotated[Path | None, typer.Option(help="Folder whose new CSV/Parquet files start a run.")] = None,
    s3: Annotated[str | None, typer.Option("--s3", help="s3://BUCKET/PREFIX whose new objects start a run.")] = None,
    webhook_port: Annotated[
        int | None, typer.Option(help="Port of the Alertmanager webhook receiver (POST /alertmanager); 0: any.")
    ] = None,
    webhook_host: Annotated[
        str, typer.Option(help="Address of the receiver; off loopback it needs a token.")
    ] = "127.0.0.1",
    token_file: Annotated[
        Path | None, typer.Option(help="Bearer token for the receiver off loopback (or HYBRIDML_CONTROL_TOKEN).")
    ] = None,
    every: Annotated[str | None, typer.Option(help="Also retrain on a schedule: 90s, 15m, 24h, 7d.")] = None,
    data: Annotated[
        str, typer.Option(help="Data for runs started by an alert or the schedule (path, file:// or s3://).")
    ] = "",
    debounce_s: Annotated[float, typer.Option(help="A run starts once no event arrived for this long.")] = 30.0,
    max_wait_s: Annotated[float, typer.Option(help="...or this long after a burst's first event.")] = 300.0,
    traffic: Annotated[
        int, typer.Option(help="Canary share of an approved new version (100: it replaces the stable one).")
    ] = 10,
    settle_s: Annotated[float, typer.Option(help="A watched file is taken once unchanged for this long.")] = 2.0,
    poll_s: Annotated[float, typer.Option(help="Seconds between polls of the folder, S3 and runs.")] = 2.0,
    run_arg: Annotated[
        list[str] | None,
        typer.Option("--run-arg", help="Option passed to `hybridml run` (repeatable), e.g. --run-arg=--target=y."),
    ] = None,
    kfp_host: Annotated[
        str | None, typer.Option(help="Start Kubeflow runs on this KFP API instead of local runs.")
    ] = None,
    kfp_arg: Annotated[
        list[str] | None, typer.Option("--kfp-arg", help="Pipeline parameter KEY=VALUE for Kubeflow runs.")
    ] = None,
    kfp_namespace: Annotated[str | None, typer.Option(help="Namespace of a multi-user Kubeflow.")] = None,
) -> None:
    """Watch a folder or S3 prefix, receive Alertmanager alerts, or follow a schedule; start retraining runs.

    A burst of events starts one run (debounced); an event seen before starts none; events arriving while a run
    is in progress wait for one follow-up run. SIGTERM or Ctrl-C stops the loop (a run in progress goes on and
    its outcome is recorded at the next start). Decisions: `hybridml trigger status`.
    """
    from hybridml.cli import _errors, _registry, _state, err
    from hybridml.monitoring.triggers import Decision, Launcher, Trigger, TriggerConfig, TriggerStore, run_loop
    from hybridml.monitoring.triggers_launch import KfpLauncher, LocalRunLauncher
    from hybridml.monitoring.triggers_sources import FolderSource, S3Source, ScheduleSource, parse_duration

    settings = _state(ctx).settings
    stop = threading.Event()
    with _errors(ctx):
        if not (watch or s3 or every or webhook_port is not None):
            raise InvalidInputError("give at least one of --watch, --s3, --webhook-port and --every")
        if (every or webhook_port is not None) and not data:
            raise InvalidInputError("--every and --webhook-port need --data: the data an alert or schedule retrains on")
        config = TriggerConfig(
            model=model, data_uri=_data_uri(data), debounce_s=debounce_s, max_wait_s=max_wait_s, traffic_percent=traffic
        )
        sources: list[Any] = []
        if watch is not None:
            sources.append(FolderSource(watch, settle_s=settle_s))
        if s3 is not None:
            sources.append(S3Source(s3))
        if every is not None:
            sources.append(ScheduleSource(parse_duration(every)))
        store = TriggerStore(settings.home / "triggers")
        launcher: Launcher
        if kfp_host:
            launcher = KfpLauncher(kfp_host, arguments=_kfp_arguments(kfp_arg or []), namespace=kfp_namespace)
        else:
            from hybridml.deploy.local.state import StateStore

            endpoints = StateStore(settings.deployments_dir)
            launcher = LocalRunLauncher(
                settings.home, store.root / "runs", run_args=run_arg or [], has_endpoint=endpoints.exists
            )

        def show(decision: Decision) -> None:
            what = [decision.event.detail] if decision.event is not None else []
            what += [f"run {decision.run_id}"] if decision.run_id else []
            line = f"{decision.decision}: {' '.join([*what, f'({decision.reason})'])}"
            err.print(line, highlight=False, soft_wrap=True)

        def record(run: dict[str, Any]) -> None:
            try:
                record_run(_registry(ctx), run)
            except HybridmlError as exc:
                err.print(f"warning: run {run['run_id']} not recorded in the history: {exc}", highlight=False)

        trigger = Trigger(config, store, launcher, on_decision=show, on_run_end=record)
        receiver = None
        if webhook_port is not None:
            from hybridml.monitoring.triggers_webhook import WebhookServer
            from hybridml.serving.auth import read_token

            token = read_token(str(token_file) if token_file else None, os.environ)
            receiver = WebhookServer(trigger, webhook_host, webhook_port, token).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        watching = [s.source_id for s in sources] + ([receiver.url] if receiver else [])
        err.print(
            f"trigger for {model}: {', '.join(watching)}; decisions in {store.decision_log}",
            highlight=False,
            soft_wrap=True,
        )
        try:
            run_loop(trigger, sources, stop, poll_s=poll_s, on_error=lambda m: err.print(f"warning: {m}"))
        finally:
            if receiver is not None:
                receiver.stop()
    err.print("trigger stopped", highlight=False)


@app.command("status")
def status(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="How many recent decisions and runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The trigger's recent decisions (with the event and why) and the runs it started."""
    from rich.table import Table

    from hybridml.cli import _emit, _errors, _state, out
    from hybridml.monitoring.triggers import TriggerStore
    from hybridml.monitoring.triggers import status as read_status

    with _errors(ctx):
        report = read_status(TriggerStore(_state(ctx).settings.home / "triggers"), limit)
    if as_json:
        _emit(report.to_dict(), True)
        return
    decisions = Table(title="trigger decisions")
    for column in ("at", "decision", "event", "reason", "run"):
        decisions.add_column(column)
    for d in report.decisions:
        event = d["event"] or {}
        decisions.add_row(d["at"], d["decision"], event.get("detail", ""), d["reason"], d["run_id"] or "")
    runs = Table(title="runs started")
    for column in ("run", "started", "status", "version", "data", "detail"):
        runs.add_column(column)
    for r in report.runs:
        version = "" if r.get("version") is None else str(r["version"])
        runs.add_row(r["run_id"], r["started"], r["status"], version, r["data_uri"], r.get("detail") or "")
    out.print(decisions)
    out.print(runs)
    waiting = len(report.pending["events"]) if report.pending else 0
    out.print(f"{waiting} event(s) in the debounce window; {len(report.queued)} queued for a follow-up run")
