"""The Helm chart's values contract (helm lint, values.schema.json refusals) and the monitoring copies' sync."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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
    (
        {"serviceAccounts": {"deployer": {"alsoBind": [{"name": "pipeline-runner"}]}}},
        "/serviceAccounts/deployer/alsoBind/0",
        "missing property 'namespace'",
    ),
    ({"postgresql": {"enabled": "yes"}}, "/postgresql/enabled", "got string, want boolean"),
    ({"postgresql": {"enabled": False}}, "/postgresql/externalUri", "minLength: got 0, want 1"),
    (
        {"postgresql": {"enabled": False, "externalUri": "mysql://optuna@db:3306/optuna"}},
        "/postgresql/externalUri",
        "does not match pattern",
    ),
    ({"postgresql": {"externalUri": "postgresql://optuna@db/optuna"}}, "/postgresql/externalUri", "maxLength: got"),
    ({"postgresql": {"image": {"digest": "latest"}}}, "/postgresql/image/digest", "'latest' does not match pattern"),
    ({"postgresql": {"copySecretTo": ["Kubeflow"]}}, "/postgresql/copySecretTo/0", "does not match pattern"),
    ({"postgresql": {"existingSecret": "My_Secret"}}, "/postgresql/existingSecret", "does not match pattern"),
    ({"postgresql": {"persistence": {"size": "lots"}}}, "/postgresql/persistence/size", "does not match pattern"),
    (
        {"networkPolicy": {"postgresqlClientPodLabels": {"tier": 1}}},
        "/networkPolicy/postgresqlClientPodLabels/tier",
        "got number, want string",
    ),
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
    (
        {"postgresql": {"enabled": False}},
        "postgresql.externalUri must be a postgresql:// URI with postgresql.enabled false (the hpo_storage runs use),"
        ' got ""',
    ),
    (
        {"postgresql": {"externalUri": "postgresql://optuna@db/optuna"}},
        "postgresql.externalUri is for postgresql.enabled false; the chart's own PostgreSQL is on,"
        ' got "postgresql://optuna@db/optuna"',
    ),
]


@needs_helm
@pytest.mark.parametrize(
    ("values", "message"), CROSS_FIELD, ids=["replicas", "destination", "pg-external-missing", "pg-external-and-own"]
)
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


def rendered(*args: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``helm template`` of the chart in namespace hybridml: (kind, namespace, name) -> object."""
    done = helm("template", "hybridml", str(CHART), "--namespace", "hybridml", *args)
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    return {(doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]): doc for doc in docs}


PG = "hybridml-postgresql"
PG_SELECTOR = {"app.kubernetes.io/name": "postgresql", "app.kubernetes.io/component": "optuna-storage"}
PG_KINDS = {"ServiceAccount", "Secret", "StatefulSet", "Service", "NetworkPolicy", "PodDisruptionBudget"}
PG_PROBE = ["pg_isready", "--host", "127.0.0.1", "--port", "5432", "--username", "optuna", "--dbname", "optuna"]


@needs_helm
def test_postgresql_for_optuna_is_rendered_by_default() -> None:
    objects = rendered()
    assert {key for key in objects if key[2] == PG} == {
        ("ServiceAccount", "hybridml", PG),
        ("Secret", "hybridml", PG),
        ("Secret", "kubeflow", PG),  # copySecretTo: where the KFP runs execute
        ("StatefulSet", "hybridml", PG),
        ("Service", "hybridml", PG),
        ("NetworkPolicy", "hybridml", PG),
        ("PodDisruptionBudget", "hybridml", PG),
    }
    assert objects[("ServiceAccount", "hybridml", PG)]["automountServiceAccountToken"] is False
    spec = objects[("StatefulSet", "hybridml", PG)]["spec"]
    assert (spec["replicas"], spec["serviceName"], spec["selector"]) == (1, PG, {"matchLabels": PG_SELECTOR})
    assert spec["template"]["metadata"]["labels"] == PG_SELECTOR
    claim = spec["volumeClaimTemplates"]
    assert claim == [
        {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        }
    ]
    pod = spec["template"]["spec"]
    assert (pod["serviceAccountName"], pod["automountServiceAccountToken"]) == (PG, False)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["volumes"] == [{"name": "run", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    [container] = pod["containers"]
    assert container["image"] == "docker.io/library/postgres:17-bookworm"
    assert container["env"] == [
        {"name": "POSTGRES_USER", "value": "optuna"},
        {"name": "POSTGRES_DB", "value": "optuna"},
        {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": PG, "key": "password"}}},
        {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
    ]
    assert container["ports"] == [{"name": "postgresql", "containerPort": 5432, "protocol": "TCP"}]
    assert container["readinessProbe"]["exec"]["command"] == container["livenessProbe"]["exec"]["command"] == PG_PROBE
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # Everything initdb and the server write besides the data volume: the socket folder and /tmp (nss_wrapper).
    assert container["volumeMounts"] == [
        {"name": "data", "mountPath": "/var/lib/postgresql/data"},
        {"name": "run", "mountPath": "/var/run/postgresql"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    service = objects[("Service", "hybridml", PG)]["spec"]
    assert service == {
        "selector": PG_SELECTOR,
        "ports": [{"name": "postgresql", "port": 5432, "targetPort": "postgresql", "protocol": "TCP"}],
    }
    pdb = objects[("PodDisruptionBudget", "hybridml", PG)]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": PG_SELECTOR}}
    kfp_pods = {"pipelines.kubeflow.org/v2_component": "true"}
    assert objects[("NetworkPolicy", "hybridml", PG)]["spec"] == {
        "podSelector": {"matchLabels": PG_SELECTOR},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": kfp_pods}},
                    {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}},
                        "podSelector": {"matchLabels": kfp_pods},
                    },
                ],
                "ports": [{"port": 5432, "protocol": "TCP"}],
            }
        ],
    }


@needs_helm
def test_postgresql_password_is_generated_and_copied() -> None:
    """helm template cannot ``lookup``: each render draws a fresh password (kept on upgrade: the k8s test)."""
    first, second = rendered(), rendered()
    passwords = []
    for objects in (first, second):
        secrets = [objects[("Secret", namespace, PG)] for namespace in ("hybridml", "kubeflow")]
        for secret in secrets:
            assert secret["type"] == "Opaque" and set(secret["data"]) == {"password"}
            assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert secrets[0]["data"] == secrets[1]["data"]
        password = base64.b64decode(secrets[0]["data"]["password"]).decode()
        assert len(password) == 32 and password.isascii() and password.isalnum(), password
        passwords.append(password)
    assert passwords[0] != passwords[1]


@needs_helm
def test_postgresql_values_change_what_is_rendered() -> None:
    own = rendered(
        "--set",
        "postgresql.existingSecret=my-optuna-db",
        "--set",
        "postgresql.image.digest=sha256:" + "a" * 64,
        "--set",
        "postgresql.persistence.storageClassName=fast",
        "--set-json",
        'postgresql.copySecretTo=["team-a","team-b"]',
        "--set-json",
        'networkPolicy.postgresqlClientNamespaces=["team-a"]',
    )
    assert not [key for key in own if key[0] == "Secret"]  # existingSecret: no Secret anywhere
    container = own[("StatefulSet", "hybridml", PG)]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "docker.io/library/postgres:17-bookworm@sha256:" + "a" * 64
    assert container["env"][2]["valueFrom"] == {"secretKeyRef": {"name": "my-optuna-db", "key": "password"}}
    claim = own[("StatefulSet", "hybridml", PG)]["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast"
    peers = own[("NetworkPolicy", "hybridml", PG)]["spec"]["ingress"][0]["from"]
    assert [peer.get("namespaceSelector") for peer in peers] == [
        None,
        {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}},
    ]
    copies = rendered("--set-json", 'postgresql.copySecretTo=["team-a","hybridml"]')
    assert sorted(key[1] for key in copies if key[0] == "Secret") == ["hybridml", "team-a"]  # the own one once
    external = rendered(
        "--set", "postgresql.enabled=false", "--set", "postgresql.externalUri=postgresql+psycopg2://optuna@db:5432/o"
    )
    assert not [key for key in external if key[2] == PG]
    assert {key[0] for key in rendered() if key[2] == PG} == PG_KINDS


@needs_helm
def test_submit_defaults_name_the_charts_services() -> None:
    """CLUSTER_DEFAULTS (what `hybridml submit` sends) point at the Services, user and database the chart makes."""
    from urllib.parse import urlsplit

    from hybridml.adapters.kfp_client import CLUSTER_DEFAULTS, CLUSTER_NAMESPACE

    objects = rendered("--namespace", CLUSTER_NAMESPACE)

    def service_of(uri: str) -> tuple[str, int, dict[str, Any]]:
        parts = urlsplit(uri)
        name, namespace, rest = (parts.hostname or "").split(".", 2)
        assert (namespace, rest) == (CLUSTER_NAMESPACE, "svc.cluster.local")
        return name, parts.port or 0, objects[("Service", CLUSTER_NAMESPACE, name)]["spec"]

    name, port, spec = service_of(CLUSTER_DEFAULTS["tracking_uri"])
    assert name == "hybridml-mlflow" and [p["port"] for p in spec["ports"]] == [port]
    storage = urlsplit(CLUSTER_DEFAULTS["hpo_storage"])
    assert storage.scheme == "postgresql+psycopg2" and storage.password is None  # PGPASSWORD, never a parameter
    name, port, spec = service_of(CLUSTER_DEFAULTS["hpo_storage"])
    assert name == PG and [p["port"] for p in spec["ports"]] == [port] == [5432]
    env = objects[("StatefulSet", CLUSTER_NAMESPACE, PG)]["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert (storage.username, storage.path) == (values["POSTGRES_USER"], "/" + values["POSTGRES_DB"])
    assert CLUSTER_DEFAULTS["deploy_target"] == "kserve"
    # The predictor pods run as the chart's predictor account, which exists in the namespace they deploy to.
    deploy_config = json.loads(CLUSTER_DEFAULTS["deploy_config"])
    assert deploy_config["namespace"] == CLUSTER_NAMESPACE
    storage = objects[("ClusterStorageContainer", "", deploy_config["storage_container"])]
    assert storage["spec"]["container"]["securityContext"]["runAsNonRoot"] is True
    account = CLUSTER_DEFAULTS["kserve_service_account"]
    assert objects[("ServiceAccount", CLUSTER_NAMESPACE, account)]["metadata"]["name"] == "hybridml-predictor"


@needs_helm
def test_the_deployer_role_is_bound_to_the_runs_service_accounts(tmp_path: Path) -> None:
    """The pipeline's deploy steps run as the Kubeflow run's account: bound by default, configurable, or none."""

    def subjects(*args: str) -> list[tuple[str, str]]:
        binding = rendered(*args)[("RoleBinding", "hybridml", "hybridml-deployer")]
        return [(s["namespace"], s["name"]) for s in binding["subjects"] if s["kind"] == "ServiceAccount"]

    assert subjects() == [("hybridml", "hybridml-deployer"), ("kubeflow", "pipeline-runner")]
    values = tmp_path / "profiles.yaml"
    values.write_text(
        yaml.safe_dump(
            {"serviceAccounts": {"deployer": {"alsoBind": [{"namespace": "team-a", "name": "default-editor"}]}}}
        )
    )
    assert subjects("-f", str(values)) == [("hybridml", "hybridml-deployer"), ("team-a", "default-editor")]
    values.write_text(yaml.safe_dump({"serviceAccounts": {"deployer": {"alsoBind": []}}}))
    assert subjects("-f", str(values)) == [("hybridml", "hybridml-deployer")]


@needs_helm
def test_storage_container_gives_kserves_storage_initializer_the_restricted_context() -> None:
    """A ClusterStorageContainer for every scheme the kserve target hands KServe, named as the target picks it."""
    from hybridml.deploy.config import KServeConfig
    from hybridml.deploy.kserve import render

    def storage_containers(*args: str) -> list[dict[str, Any]]:
        done = helm("template", "hybridml", str(CHART), "--namespace", "hybridml", *args)
        assert done.returncode == 0, done.stderr
        return [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "ClusterStorageContainer"]

    [container] = storage_containers()
    assert container["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert container["metadata"]["name"] == "hybridml-restricted"
    assert "namespace" not in container["metadata"]  # cluster-scoped
    assert container["spec"]["workloadType"] == "initContainer"
    # Only the security context: KServe keeps its own image, args and resources (inferenceservice-config).
    assert container["spec"]["container"] == {
        "name": "storage-initializer",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    prefixes = [f["prefix"] for f in container["spec"]["supportedUriFormats"]]
    assert prefixes == [f"{scheme}://" for scheme in render.CLUSTER_SCHEMES]
    # The kserve target names it (spec.predictor.storageContainerName) when configured so.
    config = KServeConfig(namespace="hybridml", storage_container=container["metadata"]["name"])
    isvc = render.inference_service(config, "churn", "Standard", render.Served("1", "s3://m/churn/1"))
    assert isvc["spec"]["predictor"]["storageContainerName"] == "hybridml-restricted"

    assert storage_containers("--set", "kserve.storageContainer.enabled=false") == []
    [renamed] = storage_containers("--set", "kserve.storageContainer.name=team-a-restricted")
    assert renamed["metadata"]["name"] == "team-a-restricted"
    for bad, field in (
        ("kserve.storageContainer.name=Not_A_Name", "name"),
        ("kserve.storageContainer.uriPrefixes={s3}", "uriPrefixes/0"),
    ):
        refused = helm("template", "hybridml", str(CHART), "--set", bad)
        assert refused.returncode != 0 and f"at '/kserve/storageContainer/{field}'" in refused.stderr, refused.stderr
