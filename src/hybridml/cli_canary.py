"""`hybridml canary` and `hybridml ab`: canary analysis on quality and HTTP figures, and A/B test reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

canary_app = typer.Typer(no_args_is_help=True, help="Canary analysis: analyze (one decision), watch (until decided).")
ab_app = typer.Typer(no_args_is_help=True, help="A/B tests between two variants: report.")

EndpointOption = Annotated[str, typer.Option("--endpoint", help="Deployment (and registered model) name.")]
TargetOption = Annotated[str | None, typer.Option("--target", help="Deploy target (default: local).")]
DeployConfigOption = Annotated[
    Path | None, typer.Option("--deploy-config", help="The target's options as a JSON or YAML file.")
]
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
