"""The Helm chart's values contract (helm lint, values.schema.json refusals) and the monitoring copies' sync."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "hybridml"
HELM = Path(os.environ.get("HELM", ROOT / ".tools" / "go-bin" / "helm"))
EXAMPLES = sorted(CHART.glob("values-*.yaml"))


def load_render() -> ModuleType:
    """scripts/render.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("hybridml_render_script", ROOT / "scripts" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


needs_helm = pytest.mark.skipif(
    not os.access(HELM, os.X_OK), reason=f"{HELM} is not built (make {HELM.relative_to(ROOT)})"
)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=False, cwd=ROOT)


def test_examples_exist() -> None:
    assert [path.name for path in EXAMPLES] == ["values-aws.yaml", "values-kind.yaml", "values-onprem.yaml"]


def test_copies_match_their_sources() -> None:
    render = load_render()
    assert render.stale_copies() == []
    done = subprocess.run(
        [sys.executable, "scripts/render.py", "--check-sync"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_a_stale_copy_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    render = load_render()
    source, copy, missing = tmp_path / "rules.yaml", tmp_path / "copy.yaml", tmp_path / "gone.yaml"
    source.write_text("a: 1\n")
    copy.write_text("a: 2\n")
    monkeypatch.setattr(render, "ROOT", tmp_path)
    monkeypatch.setattr(render, "COPIES", ((source, (copy, missing)),))
    assert render.stale_copies() == ["copy.yaml (rules.yaml)", "gone.yaml (rules.yaml)"]
    render.sync()
    assert render.stale_copies() == []
    assert copy.read_text() == missing.read_text() == "a: 1\n"


@needs_helm
@pytest.mark.parametrize("values", [None, *EXAMPLES], ids=lambda v: "default" if v is None else v.name)
def test_helm_lint_passes(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + ([] if values is None else ["-f", str(values)])
    done = helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


# (values, the field and the complaint helm's schema validation must name)
BAD_VALUES = [
    ({"mlflow": {"replicas": "two"}}, "/mlflow/replicas", "got string, want integer"),
    ({"predictor": {"controlPort": 80}}, "/predictor/controlPort", "minimum: got 80, want 1,024"),
    ({"predictor": {"controlPort": 8080}}, "/predictor/controlPort", "'not' failed"),
    ({"mlflow": {"backend": {"type": "mysql"}}}, "/mlflow/backend/type", "value must be one of 'sqlite', 'postgresql'"),
    ({"mlflow": {"image": {"pullPolicy": "Sometimes"}}}, "/mlflow/image/pullPolicy", "must be one of 'Always'"),
    ({"namespace": {"podSecurity": "baseline"}}, "/namespace/podSecurity", "value must be 'restricted'"),
    ({"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled", "got string, want boolean"),
    ({"serviceAccounts": {"deployer": {"name": "Deployer_1"}}}, "/serviceAccounts/deployer/name", "does not match"),
    ({"mlflow": {"replicas": 2}}, "/mlflow/replicas", "value must be 1"),  # SQLite on one ReadWriteOnce volume
    (
        {"mlflow": {"backend": {"type": "postgresql"}, "artifacts": {"type": "s3", "destination": "bucket"}}},
        "/mlflow/artifacts/destination",
        "'bucket' does not match pattern",
    ),
    ({"mlflow": {"persistance": {"size": "1Gi"}}}, "/mlflow", "additional properties 'persistance' not allowed"),
]


@needs_helm
@pytest.mark.parametrize(("values", "field", "complaint"), BAD_VALUES, ids=[case[1] for case in BAD_VALUES])
def test_bad_values_are_refused_naming_the_field(
    tmp_path: Path, values: dict[str, object], field: str, complaint: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    for command in ("lint", "template"):
        done = helm(command, str(CHART), "-f", str(path))
        message = done.stdout + done.stderr
        assert done.returncode != 0, f"helm {command} accepted {values}"
        assert "values don't meet the specifications of the schema" in message
        assert f"at '{field}'" in message, message
        assert complaint in message, message


# The same cross-field rules, refused again by the templates (for installs that skip schema validation).
CROSS_FIELD = [
    (
        {"mlflow": {"replicas": 2}},
        "mlflow.replicas must be 1 with backend.type sqlite or artifacts.type pvc (one ReadWriteOnce volume), got 2",
    ),
    (
        {"mlflow": {"backend": {"type": "postgresql"}, "artifacts": {"type": "s3", "destination": "bucket"}}},
        'mlflow.artifacts.destination must be s3://BUCKET[/PREFIX] with artifacts.type s3, got "bucket"',
    ),
]


@needs_helm
@pytest.mark.parametrize(("values", "message"), CROSS_FIELD, ids=["replicas", "destination"])
def test_cross_field_values_are_refused_with_a_message(tmp_path: Path, values: dict[str, object], message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    done = helm("template", str(CHART), "-f", str(path), "--skip-schema-validation")
    assert done.returncode != 0, f"helm template accepted {values}"
    assert message in done.stderr


@needs_helm
def test_good_values_change_what_is_rendered(tmp_path: Path) -> None:
    """The example files take the chart's branches: volume and Recreate vs external stores and RollingUpdate."""

    def objects(*args: str) -> dict[tuple[str, str], dict[str, object]]:
        done = helm("template", "hybridml", str(CHART), "--namespace", "hybridml", *args)
        assert done.returncode == 0, done.stderr
        docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}

    default = objects()
    aws = objects("-f", str(CHART / "values-aws.yaml"))
    kind = objects("-f", str(CHART / "values-kind.yaml"))
    assert ("PersistentVolumeClaim", "hybridml-mlflow") in default
    assert ("PersistentVolumeClaim", "hybridml-mlflow") not in aws
    assert ("Namespace", "hybridml") not in default
    namespace = kind[("Namespace", "hybridml")]["metadata"]["labels"]  # type: ignore[index]
    assert {k: v for k, v in namespace.items() if k.startswith("pod-security")} == {
        f"pod-security.kubernetes.io/{mode}{suffix}": value
        for mode in ("enforce", "audit", "warn")
        for suffix, value in (("", "restricted"), ("-version", "latest"))
    }
    spec = default[("Deployment", "hybridml-mlflow")]["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}  # type: ignore[index]
    spec = aws[("Deployment", "hybridml-mlflow")]["spec"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"  # type: ignore[index]
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}  # type: ignore[index]
    backend = {"secretKeyRef": {"name": "hybridml-mlflow-db", "key": "uri"}}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"] == backend
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"] == "s3://hybridml-mlflow-artifacts-111122223333"
    assert "AWS_ACCESS_KEY_ID" not in env  # IRSA, no static keys
    for account in ("pipeline-runner", "deployer", "mlflow", "predictor"):
        annotations = aws[("ServiceAccount", f"hybridml-{account}")]["metadata"]["annotations"]  # type: ignore[index]
        assert annotations == {"eks.amazonaws.com/role-arn": f"arn:aws:iam::111122223333:role/hybridml-{account}"}
    assert default[("PodDisruptionBudget", "hybridml-mlflow")]["spec"]["maxUnavailable"] == 1  # type: ignore[index]
    assert aws[("PodDisruptionBudget", "hybridml-mlflow")]["spec"]["minAvailable"] == 1  # type: ignore[index]
    runtime = kind[("ServingRuntime", "hybridml")]["spec"]["containers"][0]  # type: ignore[index]
    assert runtime["image"] == "localhost/hybridml/predictor:dev" and runtime["imagePullPolicy"] == "Never"


def test_runtime_args_are_the_predictors_flags(tmp_path: Path) -> None:
    """The ServingRuntime's args parse as the predictor's flags; its control listener needs the mounted token."""
    from hybridml.errors import InvalidInputError
    from hybridml.serving.__main__ import build_parser
    from hybridml.serving.runtime import control_settings

    runtime = yaml.safe_load((ROOT / "manifests" / "base" / "servingruntime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "control-token")
    token_file = container["args"][container["args"].index("--control-token-file") + 1]
    assert Path(token_file).parent == Path(mount["mountPath"]) and mount["readOnly"] is True
    volume = next(v for v in runtime["spec"]["volumes"] if v["name"] == "control-token")
    assert volume["secret"] == {"secretName": "hybridml-control-token"}  # required, not optional
    # The image's ENTRYPOINT adds the inference address; KServe substitutes {{.Name}}.
    args = ["--bind-host", "0.0.0.0", "--bind-port", "8080", *container["args"]]
    args = [arg.replace("{{.Name}}", "churn") for arg in args]
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    parsed = build_parser().parse_args([str(token) if arg == token_file else arg for arg in args])
    assert (parsed.model_uri, parsed.model_name, parsed.control_port) == ("file:///mnt/models", "churn", 8081)
    settings = control_settings(parsed, {})
    assert settings.listener is not None and (settings.listener.host, settings.listener.port) == ("0.0.0.0", 8081)
    assert settings.auth.token == b"s3cret"
    # Without the Secret's file the predictor would refuse to start: hence the required volume.
    parsed.control_token_file = None
    with pytest.raises(InvalidInputError, match="off loopback the control listener needs a token"):
        control_settings(parsed, {})
