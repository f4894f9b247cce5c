"""`hybridml serve/feedback/endpoints`: a real router endpoint behind the CLI, with an in-memory registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from hybridml.cli import app
from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, read_bundle, save_bundle
from hybridml.deploy import LocalConfig, make_target
from hybridml.errors import InvalidInputError, NotFoundError

runner = CliRunner()
NAME = "cancer"


class FakeRegistry:
    """Versions 1 and 2 of ``cancer`` (alias champion -> 1), whose sources are the bundles' file:// URIs."""

    def __init__(self, bundles: dict[int, Path]) -> None:
        self.bundles = bundles

    def resolve(self, ref: str) -> Any:
        if ref == f"{NAME}@champion":
            return self._info(1)
        name, _, version = ref.partition("/")
        if "/" not in ref or "@" in ref:
            raise InvalidInputError(f"malformed model reference {ref!r}")
        if name != NAME or int(version) not in self.bundles:
            raise NotFoundError(f"model {name!r} has no version {version}")
        return self._info(int(version))

    def _info(self, version: int) -> Any:
        # The fields of VersionInfo that serving reads (a version with no pipeline run behind it).
        return SimpleNamespace(name=NAME, version=version, source=self.bundles[version].as_uri(), pipeline_run_id=None)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    out = {}
    for version, trees in ((1, 10), (2, 3)):
        directory = tmp_path_factory.mktemp("bundles") / f"v{version}"
        save_bundle(
            fit("xgboost", {"n_estimators": trees}, X, y), "xgboost", {"n_estimators": trees}, schema, directory
        )
        out[version] = directory
    return out


@pytest.fixture
def home(tmp_path: Path, bundles: dict[int, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr("hybridml.cli._registry", lambda ctx: FakeRegistry(bundles))
    yield tmp_path
    target = make_target(LocalConfig(tmp_path / "deployments"))
    for deployment in target.list():  # never leave a server behind
        target.delete(deployment.name)


def invoke(home: Path, *args: str) -> tuple[int, Any, str]:
    # No Kubernetes configuration, whatever the machine has: the kserve target's refusal is then the same everywhere.
    no_cluster = {"KUBECONFIG": str(home / "no-kubeconfig"), "KUBERNETES_SERVICE_HOST": None}
    result = runner.invoke(app, ["--home", str(home), *args], env={"MLFLOW_TRACKING_URI": "", **no_cluster})
    try:
        payload = json.loads(result.stdout) if result.exit_code == 0 and "--json" in args else result.stdout
    except json.JSONDecodeError:
        payload = result.stdout
    return result.exit_code, payload, result.stderr


def _predict(endpoint: str, row: list[float], request_id: str) -> requests.Response:
    response = requests.post(
        f"{endpoint}/v1/models/{NAME}:predict",
        json={"instances": [row]},
        headers={"x-request-id": request_id},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response


def test_serve_split_feedback_and_promote_without_restart(home: Path, bundles: dict[int, Path]) -> None:
    frame, _ = builtin_breast_cancer()
    row = [float(v) for v in frame[read_bundle(bundles[1]).schema.names].iloc[0]]
    code, served, err = invoke(
        home, "serve", "--model", f"{NAME}@champion", "--canary", f"{NAME}/2:20", "--shadow", f"{NAME}/2",
        "--host", "127.0.0.1", "--timeout", "60", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert (served["stable_version"], served["canary_version"], served["canary_percent"]) == ("1", "2", 20)
    assert served["shadow_version"] == "2" and served["ready"]
    assert served["payload_log"] == str(home / "deployments" / f"{NAME}.payload.jsonl")
    target = make_target(LocalConfig(home / "deployments"))
    pid = target.state(NAME)["pid"]
    endpoint = served["endpoint"]

    code, moved, err = invoke(home, "endpoints", "traffic", NAME, "100", "--json")
    assert code == 0, err
    assert moved["canary_percent"] == 100
    assert {_predict(endpoint, row, f"t-{i}").headers["x-hybridml-version"] for i in range(5)} == {"2"}

    # Feedback: one label by flags, more from a CSV; both land in the endpoint's feedback log.
    code, sent, err = invoke(home, "feedback", "--model", NAME, "--request-id", "t-0", "--label", "1", "--json")
    assert (code, sent["accepted"]) == (0, 1), err
    labels = home / "labels.csv"
    labels.write_text("request_id,label\nt-1,0\nt-2,true\n")
    code, sent, err = invoke(home, "feedback", str(labels), "--endpoint", endpoint, "--json")
    assert (code, sent["accepted"]) == (0, 2), err
    logged = [json.loads(line) for line in target.feedback_log(NAME).read_text().splitlines()]
    assert [(r["request_id"], r["label"]) for r in logged] == [("t-0", 1), ("t-1", 0), ("t-2", 1)]

    code, promoted, err = invoke(home, "endpoints", "promote", NAME, "--json")
    assert code == 0, err
    assert (promoted["stable_version"], promoted["canary_version"], promoted["ready"]) == ("2", None, True)
    assert target.state(NAME)["pid"] == pid  # promoted inside the running router
    response = _predict(endpoint, row, "after")
    assert (response.headers["x-hybridml-version"], response.headers["x-hybridml-variant"]) == ("2", "stable")

    code, _, err = invoke(home, "endpoints", "rollback", NAME)
    assert code == 4  # ConflictError: nothing left to roll back
    assert err.strip().splitlines() == [f"error: deployment {NAME!r} has no canary to roll back"]

    # predict without --endpoint goes through the target's invoke: one score per row.
    rows = home / "rows.csv"
    frame[read_bundle(bundles[1]).schema.names].head(3).to_csv(rows, index=False)
    code, predicted, err = invoke(home, "predict", str(rows), "--model", NAME, "--json")
    assert code == 0, err
    assert predicted["endpoint"] == endpoint and len(predicted["predictions"]) == 3

    # The shadow goes off through the contract; a config file can name the target's state directory.
    code, unshadowed, err = invoke(home, "endpoints", "shadow", NAME, "--off", "--json")
    assert code == 0, err
    assert (unshadowed["stable_version"], unshadowed["shadow_version"], unshadowed["ready"]) == ("2", None, True)
    config = home / "deploy.yaml"
    config.write_text(f"target: local\nstate_dir: {home / 'deployments'}\n")
    code, listed, err = invoke(home, "endpoints", "list", "--deploy-config", str(config), "--json")
    assert code == 0, err
    assert [(d["name"], d["stable_version"], d["shadow_version"]) for d in listed] == [(NAME, "2", None)]
    code, listed, err = invoke(home / "elsewhere", "endpoints", "list", "--json")
    assert (code, listed) == (0, [])  # another home has no deployments


@pytest.mark.parametrize(
    ("args", "message", "exit_code"),
    [
        (
            ("serve", "--model", "cancer@champion", "--canary", "cancer/2"),
            "--canary must look like NAME/VERSION:PCT",
            2,
        ),
        (("serve", "--model", "cancer@champion", "--canary", "cancer/2:100"), "PCT in 1-99", 2),
        (("serve", "--model", "cancer@champion", "--shadow", "cancer@x"), "--shadow must look like NAME/VERSION", 2),
        (("serve", "--model", "cancer/7"), "has no version 7", 3),
        (("serve", "--model", "cancer/1", "--port", "0"), "port must be an integer from 1 to 65535", 2),
        (("feedback", "--request-id", "r", "--label", "1"), "give exactly one of --model and --endpoint", 2),
        (("feedback", "--model", "m"), "give either a CSV file or --request-id with --label", 2),
        (("feedback", "--model", "m", "--request-id", "r"), "--request-id and --label go together", 2),
        (("feedback", "nope.csv", "--model", "m"), "feedback file not found", 2),
        (("feedback", "--model", "ghost", "--request-id", "r", "--label", "1"), "no local deployment named 'ghost'", 3),
        (("endpoints", "traffic", "ghost", "10"), "no local deployment named 'ghost'", 3),
        (("endpoints", "promote", "ghost"), "no local deployment named 'ghost'", 3),
        (
            ("endpoints", "list", "--target", "kserve"),
            "kserve target: no usable Kubernetes configuration (in-cluster config, KUBECONFIG or ~/.kube/config)",
            2,
        ),
        (("endpoints", "promote", "x", "--target", "nowhere"), "unknown deploy target 'nowhere'", 2),
        (("endpoints", "list", "--deploy-config", "nope.yaml"), "deploy config file not found", 3),
        (("endpoints", "shadow", "cancer"), "give exactly one of --model and --off", 2),
        (("endpoints", "shadow", "cancer", "--model", "cancer/1", "--off"), "give exactly one of --model and --off", 2),
        (("endpoints", "shadow", "ghost", "--off"), "no local deployment named 'ghost'", 3),
        (("endpoints", "shadow", "ghost", "--model", "cancer/1"), "no local deployment named 'ghost'", 3),
        (("endpoints", "delete", "My Model"), "invalid model name 'My Model'", 2),
        (("serve", "--model", "cancer/1", "--deploy-config", "nope.json"), "deploy config file not found", 3),
    ],
)
def test_serving_errors_are_one_line(home: Path, args: tuple[str, ...], message: str, exit_code: int) -> None:
    code, _, err = invoke(home, *args)
    assert code == exit_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]


def test_feedback_csv_needs_its_columns(home: Path) -> None:
    bad = home / "bad.csv"
    bad.write_text("id,label\nr,1\n")
    code, _, err = invoke(home, "feedback", str(bad), "--endpoint", "http://127.0.0.1:9")
    assert code == 2 and "must have the columns request_id and label" in err


def test_a_config_file_with_a_bad_key_is_refused_naming_it(home: Path) -> None:
    config = home / "deploy.json"
    config.write_text('{"start_timeout_s": 5, "hots": "0.0.0.0"}')
    code, _, err = invoke(home, "endpoints", "list", "--deploy-config", str(config))
    assert code == 2
    assert err.strip().splitlines()[0].startswith("error: unknown local deploy config key 'hots' (known: ")
    config.write_text('{"target": "sagemaker"}')
    code, _, err = invoke(home, "serve", "--model", "cancer/1", "--deploy-config", str(config))
    assert code == 2
    assert err.strip() == "error: deploy config is for target 'sagemaker', not 'local'"


@pytest.mark.parametrize(
    ("host", "token_file", "env_token", "noted"),
    [
        ("0.0.0.0", None, None, True),
        ("::", None, None, True),
        ("0.0.0.0", "/run/secrets/token", None, False),
        ("0.0.0.0", None, "t0ken", False),
        ("127.0.0.1", None, None, False),
        ("localhost", None, None, False),
    ],
)
def test_serve_says_control_stays_on_loopback_without_a_token(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    token_file: str | None,
    env_token: str | None,
    noted: bool,
) -> None:
    from hybridml.cli import _say_where_control_listens

    monkeypatch.delenv("HYBRIDML_CONTROL_TOKEN", raising=False)
    if env_token:
        monkeypatch.setenv("HYBRIDML_CONTROL_TOKEN", env_token)
    _say_where_control_listens(host, token_file)
    said = capsys.readouterr().err
    assert ("control (promote, rollback, traffic, feedback) stays on loopback" in said) is noted
    assert "t0ken" not in said


@pytest.mark.parametrize("source", ["file", "env", "none"])
def test_feedback_sends_the_control_token_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    import hybridml.serving.cli_support as cli_support

    sent: list[str | None] = []

    def fake_send(endpoint: str, labels: dict[str, object], timeout_s: float = 10, token: str | None = None) -> int:
        sent.append(token)
        return len(labels)

    monkeypatch.setattr(cli_support, "send_feedback", fake_send)
    monkeypatch.delenv("HYBRIDML_CONTROL_TOKEN", raising=False)
    url = "http://predictor.example:8080"  # never contacted: send_feedback is replaced above
    args = ["--home", str(tmp_path), "feedback", "--endpoint", url, "--request-id", "r", "--label", "1"]
    if source == "file":
        (tmp_path / "token").write_text("from-a-file\n")  # a mounted Secret often ends in a newline
        args += ["--token-file", str(tmp_path / "token")]
    elif source == "env":
        monkeypatch.setenv("HYBRIDML_CONTROL_TOKEN", "from-env")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sent == [{"file": "from-a-file", "env": "from-env", "none": None}[source]]
    assert "from-" not in result.output  # the token is never echoed
