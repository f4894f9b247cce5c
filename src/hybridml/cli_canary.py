"""`hybridml canary` and `hybridml ab`: canary analysis on quality and HTTP figures, and A/B test reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from hybridml.cli_options import ContextOption, DeployConfigOption, KubeconfigOption

canary_app = typer.Typer(no_args_is_help=True, help="Canary analysis: analyze (one decision), watch (until decided).")
ab_app = typer.Typer(no_args_is_help=True, help="A/B tests between two variants: start, stop (kserve), report.")

EndpointOption = Annotated[str, typer.Option("--endpoint", help="Deployment (and registered model) name.")]
TargetOption = Annotated[str | None, typer.Option("--target", help="Deploy target (default: local).")]
PayloadOption = Annotated[
    Path | None, typer.Option("--payload-log", help="Payload log (default: the local endpoint's own).")
]
FeedbackOption = Annotated[
    Path | None, typer.Option("--feedback-log", help="Feedback log (default: the local endpoint's own).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
AlphaOption = Annotated[float, typer.Option(help="Level of the tests.")]
MinRequestsOption = Annotated[int, typer.Option(help="Requests per variant and window before HTTP checks judge.")]
MinLabelsOption = Annotated[int, typer.Option(help="Joined labels per variant before the AUC check judges.")]
MarginOption = Annotated[float, typer.Option(help="AUC non-inferiority margin.")]
MaxWindowsOption = Annotated[int, typer.Option(help="Windows without a decision before rolling back.")]
SlackOption = Annotated[
    float, typer.Option("--latency-slack-s", help="Seconds the canary's p99 may exceed stable's whatever the ratio.")
]
DriftedOption = Annotated[
    bool | None, typer.Option("--drifted/--not-drifted", help="The canary's drift signal (default: not judged).")
]
DriftJsonOption = Annotated[
    Path | None, typer.Option("--drift-json", help="Output of `hybridml monitor drift --json` for the canary.")
]


def _logs(target: Any, name: str, payload: Path | None, feedback: Path | None) -> tuple[Path | None, Path | None]:
    """The endpoint's logs: the flags, else what a local target records for the deployment."""
    if payload is None and hasattr(target, "payload_log"):
        payload = target.payload_log(name)
    if feedback is None and hasattr(target, "feedback_log"):
        feedback = target.feedback_log(name)
    return payload, feedback


def _drift(drifted: bool | None, drift_json: Path | None) -> tuple[bool | None, float | None]:
    from hybridml.errors import InvalidInputError

    if drift_json is None:
        return drifted, None
    if drifted is not None:
        raise InvalidInputError("give --drifted/--not-drifted or --drift-json, not both")
    try:
        report = json.loads(drift_json.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{drift_json}: not JSON: {exc}") from None
    if not isinstance(report, dict) or not isinstance(report.get("drift"), bool):
        raise InvalidInputError(f"{drift_json}: expected an object with a boolean 'drift'")
    prediction = report.get("prediction") or {}
    pvalue = prediction.get("p_value") if isinstance(prediction, dict) else None
    return report["drift"], pvalue if isinstance(pvalue, int | float) else None


def _analysis(
    ctx: typer.Context,
    endpoint: str,
    target: str | None,
    deploy_config: Path | None,
    payload_log: Path | None,
    feedback_log: Path | None,
    policy: dict[str, Any],
    drifted: bool | None,
    drift_json: Path | None,
) -> Any:
    from hybridml.cli import _registry, _target
    from hybridml.monitoring.canary import CanaryAnalysis, CanaryPolicy

    drift, pvalue = _drift(drifted, drift_json)
    deployed = _target(ctx, target, deploy_config)
    deployed.status(endpoint)  # an unknown endpoint fails here, before the registry is opened
    payload, feedback = _logs(deployed, endpoint, payload_log, feedback_log)
    return CanaryAnalysis(
        deployed,
        _registry(ctx),
        endpoint,
        payload_log=payload,
        feedback_log=feedback,
        policy=CanaryPolicy(**policy),
        drifted=drift,
        drift_pvalue=pvalue,
    )


def _print_decision(decision: dict[str, Any], as_json: bool) -> None:
    from hybridml.cli import _emit, err

    if as_json:
        _emit(decision, True)
        return
    err.print(
        f"window {decision['window']}: [bold]{decision['decision']}[/bold]"
        f" (canary {decision['canary_version']} vs stable {decision['stable_version']})"
        + (" - applied" if decision["applied"] else ""),
        highlight=False,
        soft_wrap=True,
    )
    for name, check in decision["checks"].items():
        err.print(f"  {name}: {check['verdict']} - {check['reason']}", highlight=False, soft_wrap=True)


@canary_app.command("analyze")
def analyze(
    ctx: typer.Context,
    endpoint: EndpointOption,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    payload_log: PayloadOption = None,
    feedback_log: FeedbackOption = None,
    window_s: Annotated[
        float, typer.Option("--window-s", help="Seconds between the two scrapes (0: counts since the server started).")
    ] = 0.0,
    apply: Annotated[
        bool, typer.Option("--apply", help="Act (promote/rollback) and record the decision in the registry.")
    ] = False,
    alpha: AlphaOption = 0.05,
    min_requests: MinRequestsOption = 50,
    min_labels: MinLabelsOption = 50,
    auc_margin: MarginOption = 0.02,
    latency_slack_s: SlackOption = 0.025,
    max_windows: MaxWindowsOption = 10,
    drifted: DriftedOption = None,
    drift_json: DriftJsonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide once: promote, continue or rollback (without --apply nothing is changed or recorded)."""
    from hybridml.cli import _errors

    policy = {
        "alpha": alpha, "min_requests": min_requests, "min_labels": min_labels, "auc_margin": auc_margin,
        "max_windows": max_windows, "latency_slack_s": latency_slack_s,
    }  # fmt: skip
    with _errors(ctx):
        analysis = _analysis(
            ctx, endpoint, target, deploy_config, payload_log, feedback_log, policy, drifted, drift_json
        )
        decision, _ = analysis.analyze(window_s)
        if apply:
            decision = analysis.apply(decision)
    _print_decision(decision.to_dict(), as_json)


@canary_app.command("watch")
def watch(
    ctx: typer.Context,
    endpoint: EndpointOption,
    interval: Annotated[float, typer.Option("--interval", help="Seconds per analysis window.")] = 60.0,
    max_windows: MaxWindowsOption = 10,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    payload_log: PayloadOption = None,
    feedback_log: FeedbackOption = None,
    alpha: AlphaOption = 0.05,
    min_requests: MinRequestsOption = 50,
    min_labels: MinLabelsOption = 50,
    auc_margin: MarginOption = 0.02,
    latency_slack_s: SlackOption = 0.025,
    drifted: DriftedOption = None,
    drift_json: DriftJsonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Analyse window after window, acting and recording each decision, until promote or rollback."""
    from hybridml.cli import _errors
    from hybridml.monitoring.canary import decisions_json

    policy = {
        "alpha": alpha, "min_requests": min_requests, "min_labels": min_labels, "auc_margin": auc_margin,
        "max_windows": max_windows, "latency_slack_s": latency_slack_s,
    }  # fmt: skip
    with _errors(ctx):
        analysis = _analysis(
            ctx, endpoint, target, deploy_config, payload_log, feedback_log, policy, drifted, drift_json
        )
        decisions = decisions_json(analysis.watch(interval))
    if as_json:
        typer.echo(json.dumps({"decision": decisions[-1]["decision"], "windows": decisions}, default=str))
        return
    for decision in decisions:
        _print_decision(decision, False)


@ab_app.command("report")
def report(
    ctx: typer.Context,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="Deployment name (its logs and variants).")] = None,
    payload_log: Annotated[
        Path | None, typer.Option("--payload-log", help="Payload log (instead of --endpoint).")
    ] = None,
    feedback_log: Annotated[
        Path | None, typer.Option("--feedback-log", help="Feedback log (with --payload-log).")
    ] = None,
    metric: Annotated[str, typer.Option(help="auc or positive_rate (share of requests labelled positive).")] = "auc",
    a: Annotated[str | None, typer.Option("--a", help="Variant A as VERSION:VARIANT (default: stable).")] = None,
    b: Annotated[
        str | None, typer.Option("--b", help="Variant B as VERSION:VARIANT (default: canary, else shadow).")
    ] = None,
    alpha: AlphaOption = 0.05,
    power: Annotated[float, typer.Option(help="Power for the sample size still needed.")] = 0.8,
    effect: Annotated[
        float | None, typer.Option(help="Difference to plan the sample size for (default: the one seen).")
    ] = None,
    target: TargetOption = None,
    deploy_config: DeployConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare two variants on online AUC or positive rate: test, sample size still needed, verdict."""
    from hybridml.cli import _emit, _errors, _target
    from hybridml.errors import InvalidInputError
    from hybridml.monitoring.ab import ab_report, parse_key, pick_variants
    from hybridml.monitoring.feedback_join import online_quality
    from hybridml.serving.payload_log import read_records

    with _errors(ctx):
        key_a, key_b = parse_key(a) if a else None, parse_key(b) if b else None
        model = None
        if endpoint is not None:
            if payload_log is not None or feedback_log is not None:
                raise InvalidInputError("give --endpoint or --payload-log with --feedback-log, not both")
            deployed = _target(ctx, target, deploy_config)
            status = deployed.status(endpoint)
            payload_log, feedback_log = _logs(deployed, endpoint, None, None)
            key_a = key_a or (status.stable_version, "stable")
            if key_b is None and (status.canary_version or status.shadow_version):
                key_b = (
                    (status.canary_version, "canary") if status.canary_version else (status.shadow_version, "shadow")
                )
            model = endpoint
        if payload_log is None or feedback_log is None:
            raise InvalidInputError("give --endpoint, or --payload-log with --feedback-log")
        for path in (payload_log, feedback_log):
            if not path.exists():
                raise InvalidInputError(f"log not found: {path}")
        quality = online_quality(read_records(payload_log), read_records(feedback_log), model=model)
        chosen_a, chosen_b = pick_variants(quality, key_a, key_b)
        result = ab_report(quality, chosen_a, chosen_b, metric=metric, alpha=alpha, power=power, effect=effect)
    _emit(result, as_json)


AbTargetOption = Annotated[
    str | None, typer.Option("--target", help="Deploy target: kserve (default; the only one with A/B graphs).")
]
GraphOption = Annotated[str, typer.Option("--name", help="InferenceGraph name (the A/B test's endpoint).")]
GraphNamespaceOption = Annotated[str | None, typer.Option("--namespace", help="Namespace of the graph and services.")]


def _graph_target(ctx: typer.Context, target: str | None, deploy_config: Path | None, **flags: Any) -> Any:
    """The kserve target for ``ab start|stop``; other targets are refused, naming what they offer instead."""
    from hybridml.cli import _target
    from hybridml.errors import InvalidInputError

    deployed = _target(ctx, target or "kserve", deploy_config, **flags)
    if deployed.target_name != "kserve":
        raise InvalidInputError(
            f"ab start|stop route between two InferenceServices with a KServe InferenceGraph: use --target kserve"
            f" (the {deployed.target_name} target has no such router; for two versions of one model use"
            " `hybridml deploy --canary PCT`)"
        )
    return deployed


def _record_ab(ctx: typer.Context, graph: Any, detail: str) -> None:
    """Record an A/B start or stop in the history of both versions (action ``deployment``)."""
    from hybridml.cli import _registry

    registry = _registry(ctx)
    figures = [
        {"model": v.model, "version": v.version, "service": v.service, "weight": v.weight} for v in graph.variants
    ]
    for variant in graph.variants:
        registry.record_event(
            variant.model, variant.version, "deployment", detail, reason=json.dumps(figures, separators=(",", ":"))
        )


@ab_app.command("start")
def ab_start(
    ctx: typer.Context,
    name: GraphOption,
    a: Annotated[str, typer.Option("--a", help="Variant A: an Approved NAME/VERSION or NAME@alias.")],
    b: Annotated[str, typer.Option("--b", help="Variant B: an Approved NAME/VERSION or NAME@alias.")],
    split: Annotated[int, typer.Option("--split", help="B's share of requests, 1-99 (A gets the rest).")] = 50,
    target: AbTargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: GraphNamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: JsonOption = False,
) -> None:
    """Split requests between two versions with an InferenceGraph; deploys (or reuses) their InferenceServices.

    A version's service is reused when it already serves that version alone (NAME, else NAME-vVERSION), else
    deployed there and waited for. Both versions' histories record the start.
    """
    from dataclasses import asdict

    from hybridml.cli import _emit, _errors, _model_ref, _registry, _state
    from hybridml.core.approval import check_approved
    from hybridml.deploy import mlflow_fetch
    from hybridml.deploy.kserve import graph as ab_graph

    with _errors(ctx):
        fetch = mlflow_fetch(_state(ctx).settings.tracking_uri)
        deployed = _graph_target(
            ctx, target, deploy_config, fetch=fetch, namespace=namespace, kubeconfig=kubeconfig, context=context
        )
        registry = _registry(ctx)
        refs = []
        for ref in (a, b):
            info = registry.resolve(ref)
            check_approved(info.name, info.version, info.status)
            refs.append(_model_ref(registry, f"{info.name}/{info.version}", fetch))
        started = ab_graph.start(deployed, name, refs[0], refs[1], split)
        weights = " / ".join(f"{v.label.upper()} {v.model}/{v.version} {v.weight}%" for v in started.variants)
        _record_ab(ctx, started, f"kserve ab {name} started: {weights}")
    _emit(asdict(started), as_json)


@ab_app.command("stop")
def ab_stop(
    ctx: typer.Context,
    name: GraphOption,
    target: AbTargetOption = None,
    deploy_config: DeployConfigOption = None,
    namespace: GraphNamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete the InferenceGraph, and the services `ab start` created if they still serve that version alone.

    Reused services (and created ones changed since) are kept and listed. Both versions' histories record the stop.
    """
    from dataclasses import asdict

    from hybridml.cli import _emit, _errors
    from hybridml.deploy.kserve import graph as ab_graph

    with _errors(ctx):
        deployed = _graph_target(
            ctx, target, deploy_config, namespace=namespace, kubeconfig=kubeconfig, context=context
        )
        stopped = ab_graph.stop(deployed, name)
        deleted = ", ".join(stopped.deleted_services) or "no service"
        _record_ab(ctx, stopped.graph, f"kserve ab {name} stopped: deleted the graph and {deleted}")
    _emit(asdict(stopped), as_json)
