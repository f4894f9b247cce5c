"""hybridml submit / schedule and the trigger's KfpLauncher through the real kfp.Client against a loopback KFP API.

The server (fake_kfp.py) speaks the v2beta1 endpoints kfp.Client 2.17 calls and records each request, so these
tests assert what goes over the wire: the uploaded file, the run's parameters, experiment, namespace, schedule and
the bearer token. Bad input is refused before the first request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hybridml import cli, cli_kfp
from hybridml.adapters import kfp_client
from hybridml.adapters.kfp_client import CLUSTER_DEFAULTS, COMPILED_PIPELINE
from hybridml.monitoring.triggers import RunRequest
from hybridml.monitoring.triggers_launch import KfpLauncher
from hybridml.pipelines.training import COMPILED

from .fake_kfp import FakeKfp

P = "/apis/v2beta1"
VERSION_NAME = f"hybridml-training-{hashlib.sha256(COMPILED.read_bytes()).hexdigest()[:12]}"
TOKEN = "s3cret-token-value"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeKfp]:
    fake = FakeKfp()
    yield fake
    fake.close()


@pytest.fixture
def kfp(server: FakeKfp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeKfp:
    server.reset()
    monkeypatch.setenv("HYBRIDML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HYBRIDML_DAEMON", "0")
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    return server


def _app() -> typer.Typer:
    # The commands as the lead wires them into hybridml's app, with its root callback (home, --verbose).
    app = typer.Typer()
    app.callback()(cli._root)
    app.command("submit")(cli_kfp.submit)
    app.command("schedule")(cli_kfp.schedule)
    return app


def _invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(_app(), list(args), env=env)


def _ok(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = _invoke(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _cluster(**override: Any) -> dict[str, Any]:
    return {**CLUSTER_DEFAULTS, **override}


def test_the_committed_file_is_what_is_uploaded() -> None:
    assert COMPILED_PIPELINE.resolve() == COMPILED.resolve()


def test_submit_uploads_the_committed_pipeline_and_starts_a_run(kfp: FakeKfp, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    out = _ok(
        "submit",
        "--host",
        kfp.url,
        "--experiment",
        "churn",
        "--namespace",
        "team-a",
        "--run-name",
        "nightly",
        "--param",
        "model_name=churn",
        "--param",
        "n_trials=5",
        "--param",
        "threshold=0.8",
        "--param",
        "auto_approve=false",
        "--param",
        'params_json={"max_depth": 3}',
        "--token-file",
        str(token_file),
    )
    # A namespace given: no healthz probe for multi-user mode.
    assert kfp.calls() == [
        ("GET", f"{P}/pipelines"),
        ("POST", f"{P}/pipelines/upload"),
        ("POST", f"{P}/pipelines/upload_version"),
        ("GET", f"{P}/experiments"),
        ("POST", f"{P}/experiments"),
        ("POST", f"{P}/runs"),
    ]
    requests = kfp.state.requests
    assert {r.headers.get("authorization") for r in requests} == {f"Bearer {TOKEN}"}
    assert json.loads(requests[0].query["filter"]) == {
        "predicates": [{"operation": 1, "key": "display_name", "stringValue": "hybridml-training"}]
    }
    assert requests[0].query["namespace"] == "team-a"
    upload, version_upload = requests[1], requests[2]
    assert upload.query == {"name": "hybridml-training", "namespace": "team-a"}
    assert upload.upload() == ("hybridml_training.yaml", COMPILED.read_bytes())
    assert version_upload.query == {"name": VERSION_NAME, "pipelineid": "pipeline-1"}
    assert version_upload.upload() == ("hybridml_training.yaml", COMPILED.read_bytes())
    assert requests[3].query["namespace"] == "team-a"
    assert json.loads(requests[3].query["filter"])["predicates"][0]["stringValue"] == "churn"
    assert requests[4].json() == {"display_name": "churn", "namespace": "team-a"}
    arguments = _cluster(model_name="churn", n_trials=5, threshold=0.8, auto_approve=False)
    arguments["params_json"] = '{"max_depth": 3}'
    assert requests[5].json() == {
        "experiment_id": "experiment-4",
        "display_name": "nightly",
        "pipeline_version_reference": {"pipeline_id": "pipeline-1", "pipeline_version_id": "version-3"},
        "runtime_config": {"parameters": arguments},
    }
    assert out == {
        "run_id": "run-5",
        "pipeline_id": "pipeline-1",
        "version_id": "version-3",
        "version_name": VERSION_NAME,
        "uploaded": True,
        "experiment": "churn",
        "namespace": "team-a",
        "arguments": arguments,
    }


def test_submit_with_no_parameters_names_the_cluster_services_and_reuses_the_upload(kfp: FakeKfp) -> None:
    first = _ok("submit", "--host", kfp.url)
    kfp.state.requests.clear()
    again = _ok("submit", "--host", kfp.url, env={"KF_PIPELINES_TOKEN": TOKEN})
    # No namespace: kfp.Client asks healthz whether the installation is multi-user; the same file is not re-sent.
    assert kfp.calls() == [
        ("GET", f"{P}/healthz"),
        ("GET", f"{P}/pipelines"),
        ("GET", f"{P}/pipelines/pipeline-1/versions"),
        ("GET", f"{P}/experiments"),
        ("POST", f"{P}/runs"),
    ]
    assert {r.headers.get("authorization") for r in kfp.state.requests} == {f"Bearer {TOKEN}"}
    assert json.loads(kfp.state.requests[2].query["filter"])["predicates"][0]["stringValue"] == VERSION_NAME
    run = kfp.state.runs[-1]
    assert run["runtime_config"]["parameters"] == {
        "tracking_uri": "http://hybridml-mlflow.hybridml.svc.cluster.local:5000",
        "deploy_target": "kserve",
        "deploy_config": '{"target": "kserve", "namespace": "hybridml", "storage_container": "hybridml-restricted"}',
        "kserve_service_account": "hybridml-predictor",
        "hpo_storage": "postgresql+psycopg2://optuna@hybridml-postgresql.hybridml.svc.cluster.local:5432/optuna",
    }
    assert run["display_name"] == VERSION_NAME  # the default run name
    assert run["pipeline_version_reference"] == {"pipeline_id": "pipeline-1", "pipeline_version_id": "version-3"}
    assert first["uploaded"] is True and again["uploaded"] is False
    assert again["version_id"] == first["version_id"] == "version-3"
    assert again["experiment"] == "hybridml" and again["namespace"] is None
    assert kfp.state.experiments == [{"experiment_id": "experiment-4", "display_name": "hybridml", "namespace": ""}]


def test_submit_and_schedule_run_the_pods_as_the_service_account_given(kfp: FakeKfp) -> None:
    # KFP has one ServiceAccount per run: the deploy steps reach the API server as it (docs/kserve.md).
    _ok("submit", "--host", kfp.url, "--service-account", "hybridml-pipeline-runner")
    _ok("schedule", "--host", kfp.url, "--every", "1h", "--service-account", "hybridml-pipeline-runner")
    _ok("submit", "--host", kfp.url)
    first, unset = kfp.state.runs
    (scheduled,) = kfp.state.recurring
    assert first["service_account"] == scheduled["service_account"] == "hybridml-pipeline-runner"
    assert "service_account" not in unset  # KFP's own default then
    assert first["runtime_config"] == unset["runtime_config"] == {"parameters": CLUSTER_DEFAULTS}


def test_submit_without_cluster_defaults_sends_only_the_given_parameters(kfp: FakeKfp) -> None:
    out = _ok("submit", "--host", kfp.url, "--no-cluster-defaults", "--param", "seed=7")
    assert kfp.state.runs[-1]["runtime_config"] == {"parameters": {"seed": 7}}
    assert out["arguments"] == {"seed": 7}
    assert all("authorization" not in r.headers for r in kfp.state.requests)


@pytest.mark.parametrize(
    ("every", "seconds"), [("1d", 86400), ("6h", 21600), ("1h30m", 5400), ("60s", 60), ("3600", 3600)]
)
def test_schedule_every_creates_a_periodic_recurring_run(kfp: FakeKfp, every: str, seconds: int) -> None:
    out = _ok("schedule", "--host", kfp.url, "--every", every, "--namespace", "team-a", "--param", "n_trials=3")
    job = kfp.state.recurring[-1]
    assert job["trigger"] == {"periodic_schedule": {"interval_second": seconds}}
    assert job["max_concurrency"] == 1 and job["no_catchup"] is True and job["mode"] == "ENABLE"
    assert job["display_name"] == "hybridml-retraining"
    assert job["experiment_id"] == kfp.state.experiments[0]["experiment_id"]
    assert kfp.state.experiments[0]["namespace"] == "team-a"
    assert job["runtime_config"] == {"parameters": _cluster(n_trials=3)}
    assert job["pipeline_version_reference"] == {"pipeline_id": "pipeline-1", "pipeline_version_id": "version-3"}
    assert out["interval_s"] == seconds and out["cron"] is None and out["recurring_run_id"] == job["recurring_run_id"]


@pytest.mark.parametrize(
    ("cron", "sent"),
    [
        ("0 3 * * *", "0 0 3 * * *"),  # five fields: seconds 0 in front
        ("30 0 3 * * MON-FRI", "30 0 3 * * MON-FRI"),
        ("0 */15 8-18 1,15 JAN-JUN ?", "0 */15 8-18 1,15 JAN-JUN ?"),
    ],
)
def test_schedule_cron_sends_kfps_six_fields(kfp: FakeKfp, cron: str, sent: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    out = _ok(
        "schedule",
        "--host",
        kfp.url,
        "--cron",
        cron,
        "--name",
        "weekly",
        "--max-concurrency",
        "2",
        "--catchup",
        "--token-file",
        str(token_file),
    )
    job = kfp.state.recurring[-1]
    assert job["trigger"] == {"cron_schedule": {"cron": sent}}
    assert job["display_name"] == "weekly" and job["max_concurrency"] == 2 and job["no_catchup"] is False
    assert out["cron"] == sent and out["interval_s"] is None
    assert {r.headers.get("authorization") for r in kfp.state.requests} == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "--param", "n_trails=5"], "unknown pipeline parameter 'n_trails'; the pipeline has: auto_approve,"),
        (["submit", "--param", "n_trials=five"], "parameter n_trials takes NUMBER_INTEGER, got 'five'"),
        (["submit", "--param", "threshold=high"], "parameter threshold takes NUMBER_DOUBLE, got 'high'"),
        (["submit", "--param", "auto_approve=maybe"], "parameter auto_approve takes true or false, got 'maybe'"),
        (["submit", "--param", "n_trials"], "--param takes KEY=VALUE, got 'n_trials'"),
        (["submit", "--param", "=5"], "--param takes KEY=VALUE, got '=5'"),
        (["submit", "--token-file", "/nonexistent/token"], "cannot read --token-file /nonexistent/token"),
        (["schedule"], "hybridml schedule takes exactly one of --cron and --every"),
        (["schedule", "--cron", "0 3 * * *", "--every", "1d"], "takes exactly one of --cron and --every"),
        (["schedule", "--cron", "0 3 * *"], "cron expression '0 3 * *' has 4 fields; give 5"),
        (["schedule", "--cron", "0 0 3 * * * *"], "has 7 fields"),
        (["schedule", "--cron", "61 3 * * *"], "cron minute field: '61' is not in 0-59"),
        (["schedule", "--cron", "0 24 * * *"], "cron hour field: '24' is not in 0-23"),
        (["schedule", "--cron", "0 3 0 * *"], "cron day of month field: '0' is not in 1-31"),
        (["schedule", "--cron", "0 3 * 13 *"], "cron month field: '13' is not in 1-12"),
        (["schedule", "--cron", "0 3 * * 7"], "cron day of week field: '7' is not in 0-6"),
        (["schedule", "--cron", "0 3 * * FUNDAY"], "cron day of week field: 'FUNDAY' is not in 0-6"),
        (["schedule", "--cron", "*/0 3 * * *"], "cron minute field: step '0' must be a positive number"),
        (["schedule", "--cron", "0 5-3 * * *"], "cron hour field: range '5-3' ends before it starts"),
        (["schedule", "--cron", "0 3 * * $"], "cron day of week field: '$' has characters cron does not read"),
        (["schedule", "--every", "59s"], "--every 59s: a recurring run must be at least 60s apart"),
        (["schedule", "--every", "0"], "--every 0: a recurring run must be at least 60s apart"),
        (["schedule", "--every", "soon"], "--every takes a duration like 1d, 6h, 1h30m or 90s, got 'soon'"),
        (["schedule", "--every", "1w"], "got '1w'"),
    ],
)
def test_bad_input_is_refused_before_any_request(kfp: FakeKfp, args: list[str], message: str) -> None:
    result = _invoke(*args, "--host", kfp.url)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert kfp.state.requests == []


def test_an_empty_token_file_is_refused_and_a_token_never_printed(kfp: FakeKfp, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    result = _invoke("submit", "--host", kfp.url, "--token-file", str(empty))
    assert result.exit_code == 2 and f"--token-file {empty} is empty" in result.output
    assert kfp.state.requests == []
    result = _invoke("submit", "--host", kfp.url, "--json", env={"KF_PIPELINES_TOKEN": TOKEN})
    assert result.exit_code == 0 and TOKEN not in result.output


def test_api_errors_are_one_line_with_the_status(kfp: FakeKfp) -> None:
    # A pipeline of that name appears between the lookup and the upload: the server answers 409.
    kfp.state.pipelines.append({"pipeline_id": "other", "display_name": "hybridml-training", "namespace": ""})
    kfp.state.versions.append({"pipeline_id": "other", "pipeline_version_id": "v", "display_name": VERSION_NAME})
    original = kfp_client._name_filter
    try:
        kfp_client._name_filter = lambda name: original(name + "-nowhere")  # type: ignore[assignment]
        result = _invoke("submit", "--host", kfp.url)
    finally:
        kfp_client._name_filter = original  # type: ignore[assignment]
    assert result.exit_code == 4, result.output
    assert result.output.strip() == f"error: KFP API at {kfp.url} answered 409: pipeline hybridml-training exists"


def test_an_unreachable_host_fails_fast_with_exit_5(server: FakeKfp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDML_DAEMON", "0")
    result = _invoke("submit", "--host", "http://127.0.0.1:9", "--namespace", "x")
    assert result.exit_code == 5, result.output
    assert result.output.strip().startswith("error: KFP API at http://127.0.0.1:9 is not reachable (")


def test_the_trigger_launcher_runs_through_the_shared_client(kfp: FakeKfp) -> None:
    launcher = KfpLauncher(kfp.url, arguments={"deploy_target": "kserve", "n_trials": "4"}, token=TOKEN)
    request = RunRequest(run_id="r1", model="churn", data_uri="s3://lake/a.csv", traffic_percent=10, reason="new")
    launch = launcher.start(request)
    assert kfp.calls() == [
        ("GET", f"{P}/healthz"),
        ("GET", f"{P}/experiments"),
        ("POST", f"{P}/experiments"),
        ("POST", f"{P}/runs"),
    ]
    assert {r.headers.get("authorization") for r in kfp.state.requests} == {f"Bearer {TOKEN}"}
    run = kfp.state.runs[0]
    expected = {
        "deploy_target": "kserve",
        "n_trials": 4,
        "data_uri": "s3://lake/a.csv",
        "model_name": "churn",
        "traffic_percent": 10,
    }
    assert run["runtime_config"]["parameters"] == expected
    assert run["display_name"] == "hybridml-trigger-r1"
    # The file's two documents, as KFP takes them: the pipeline, and its Kubernetes platform config.
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "hybridml-training"
    assert "kubernetes" in run["pipeline_spec"]["platform_spec"]["platforms"]
    assert launch == {"kfp_run_id": "run-2", "host": kfp.url, "arguments": expected}
    with pytest.raises(Exception, match="unknown pipeline parameter 'n_trails'"):
        KfpLauncher(kfp.url, arguments={"n_trails": 4}, client=object()).start(request)
