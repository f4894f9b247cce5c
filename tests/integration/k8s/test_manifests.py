"""Every rendered manifest (scripts/render.py) against a real API server, kubernetes-validate and checkov.

One render per session (kustomize overlays, ``helm template`` per values file, the kserve target's objects).
The API server of ``control_plane`` (with the KServe and Prometheus Operator CRDs) takes each file by
server-side dry run in a namespace labelled Pod Security ``restricted``; every pod template is also created as a
Pod by dry run, so the PodSecurity admission enforces (on workloads it only warns). Core kinds go through
``kubernetes-validate --strict``; checkov runs offline over the fixed check list manifests/checkov-checks.txt.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.k8s.conftest import ControlPlane, bin_dir, install_crds
from tests.unit.test_chart import CHART, HELM, load_render

ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "hybridml"
CUSTOM_GROUPS = ("serving.kserve.io", "monitoring.coreos.com")
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
CHECKOV_CHECKS = ROOT / "manifests" / "checkov-checks.txt"
KUBE_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
KUBE_VERSION = "1.37.0"  # the control plane's (tools/k8s/go.mod)
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """scripts/render.py's output, once: relative name -> file."""
    if not os.access(HELM, os.X_OK):
        pytest.skip(f"{HELM} is not built (make {HELM.relative_to(ROOT)})")
    if shutil.which(os.environ.get("KUBECTL", "kubectl")) is None:
        pytest.skip("kubectl is not installed (Debian: apt-get install kubectl)")
    out = tmp_path_factory.mktemp("rendered")
    files = load_render().render_all(out)
    return {path.relative_to(out).as_posix(): path for path in files}


def kubectl_args(plane: ControlPlane) -> list[str]:
    return [os.environ.get("KUBECTL", "kubectl"), f"--kubeconfig={plane.kubeconfig}"]


def kubectl(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    command = [*kubectl_args(plane), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane, rendered: dict[str, Path]) -> str:
    """The rendered Namespace and ServiceAccounts, applied for real (pods name them; dry runs create nothing).

    Also the namespace ``kubeflow`` the chart copies PostgreSQL's Secret into (postgresql.copySecretTo).
    """
    kept = [doc for doc in documents(rendered["kustomize/kind.yaml"]) if doc["kind"] in ("Namespace", "ServiceAccount")]
    kept.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeflow"}})
    path = rendered["kustomize/kind.yaml"].parent / "namespace-and-accounts.yaml"
    path.write_text(yaml.safe_dump_all(kept))
    done = kubectl(control_plane, "apply", "--server-side", "-f", str(path))
    assert done.returncode == 0, done.stderr
    install_storage_container_crd(control_plane)
    return NAMESPACE


def install_storage_container_crd(plane: ControlPlane) -> None:
    """KServe's ClusterStorageContainer CRD (not in ../shared/crds), for the chart's and the base's object.

    The one scripts/build_kserve.sh copies from KServe's module when built, else the same kind with an open schema.
    """
    from kubernetes import client

    name = "clusterstoragecontainers.serving.kserve.io"
    present = client.ApiextensionsV1Api(plane.api_client()).list_custom_resource_definition(
        field_selector=f"metadata.name={name}"
    )
    if present.items:
        return
    built = bin_dir() / "kserve-crds" / "serving.kserve.io_clusterstoragecontainers.yaml"
    if built.is_file():
        install_crds(plane, [doc for doc in yaml.safe_load_all(built.read_text()) if doc])
        return
    open_schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    install_crds(
        plane,
        [
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": name},
                "spec": {
                    "group": "serving.kserve.io",
                    "scope": "Cluster",
                    "names": {
                        "kind": "ClusterStorageContainer",
                        "listKind": "ClusterStorageContainerList",
                        "plural": "clusterstoragecontainers",
                        "singular": "clusterstoragecontainer",
                    },
                    "versions": [{"name": "v1alpha1", "served": True, "storage": True, "schema": open_schema}],
                },
            }
        ],
    )


def test_everything_is_rendered(rendered: dict[str, Path]) -> None:
    expected = {f"kustomize/{name}.yaml" for name in ("kind", "onprem", "aws")}
    expected |= {f"helm/{name}.yaml" for name in ("default", "kind", "onprem", "aws")}
    expected |= {
        f"kserve/{case}.yaml"
        for case in ("servingruntime", "standard-stable", "standard-canary", "serverless-stable", "serverless-canary")
    }
    assert set(rendered) == expected
    canary = documents(rendered["kserve/standard-canary.yaml"])[0]
    assert [entry["trafficPercent"] for entry in canary["spec"]["canary"]] == [10]
    assert "canary" not in documents(rendered["kserve/standard-stable.yaml"])[0]["spec"]


def test_server_side_dry_run_accepts_every_object(
    control_plane: ControlPlane, namespace: str, rendered: dict[str, Path]
) -> None:
    for name, path in sorted(rendered.items()):
        done = kubectl(control_plane, "apply", "--server-side", "--dry-run=server", "-f", str(path))
        assert done.returncode == 0, f"{name}: {done.stderr}"
        # PodSecurity warns (warn=restricted) on a workload whose template it would refuse as a Pod.
        assert "would violate PodSecurity" not in done.stderr, f"{name}: {done.stderr}"
        applied = [line for line in done.stdout.splitlines() if line.endswith("serverside-applied (server dry run)")]
        assert len(applied) == len(documents(path)), f"{name}: {done.stdout}"


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(what, pod spec) for every Deployment and StatefulSet template and ServingRuntime of ``docs``."""
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Deployment":
            yield what, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "StatefulSet":
            # The StatefulSet controller adds a volume per claim template (claim-<set>-<ordinal>); so does this.
            spec = dict(doc["spec"]["template"]["spec"])
            claims = [claim["metadata"]["name"] for claim in doc["spec"].get("volumeClaimTemplates", [])]
            owner = doc["metadata"]["name"]
            spec["volumes"] = [
                *({"name": c, "persistentVolumeClaim": {"claimName": f"{c}-{owner}-0"}} for c in claims),
                *spec.get("volumes", []),
            ]
            yield what, spec
        elif doc["kind"] == "ServingRuntime":
            # KServe adds the pod-level context from the InferenceService; the one it writes is restricted's.
            spec = {key: doc["spec"][key] for key in ("containers", "volumes") if key in doc["spec"]}
            spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
            # The InferenceServices name the predictor's ServiceAccount (kserve target: service_account).
            spec["serviceAccountName"] = "hybridml-predictor"
            spec["containers"] = [
                {**container, "args": [arg.replace("{{.Name}}", "churn") for arg in container.get("args", [])]}
                for container in spec["containers"]
            ]
            yield what, spec


def dry_run_pod(plane: ControlPlane, spec: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
    return subprocess.run(
        [*kubectl_args(plane), "create", "--dry-run=server", "-o", "name", "-f", "-"],
        input=json.dumps(pod),
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_pod_template_is_admitted_as_a_restricted_pod(
    control_plane: ControlPlane, namespace: str, rendered: dict[str, Path]
) -> None:
    seen = 0
    for name, path in sorted(rendered.items()):
        for what, spec in pod_templates(documents(path)):
            done = dry_run_pod(control_plane, spec, "template-check")
            assert done.returncode == 0, f"{name} {what}: {done.stderr}"
            seen += 1
            if name.startswith("kserve/"):
                continue  # the kserve target's own runtime: restricted, but its root filesystem is writable
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, f"{name} {what}"
                assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
    # mlflow and postgresql per kustomize/helm render (14), the runtime in each plus the kserve target's own (8).
    assert seen == 22


def test_pod_security_refuses_a_loosened_template(
    control_plane: ControlPlane, namespace: str, rendered: dict[str, Path]
) -> None:
    """The rendered MLflow template, loosened, is refused on the same path: admission decides, not this test."""
    labels = kubectl(control_plane, "get", "namespace", namespace, "-o", "json")
    assert json.loads(labels.stdout)["metadata"]["labels"].items() >= RESTRICTED.items()
    _, spec = next(pod_templates(documents(rendered["kustomize/kind.yaml"])))
    spec = json.loads(json.dumps(spec))
    del spec["securityContext"]["seccompProfile"]
    context = spec["containers"][0]["securityContext"]
    del context["seccompProfile"], context["capabilities"]
    context["allowPrivilegeEscalation"] = True
    done = dry_run_pod(control_plane, spec, "loose")
    assert done.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in done.stderr, done.stderr
    for control in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "seccompProfile"):
        assert control in done.stderr, done.stderr


def rbac_rules(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        assert doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"), doc["metadata"]["name"]
        if doc["kind"] == "Role":
            for rule in doc["rules"]:
                yield doc["metadata"]["name"], rule


def test_rbac_is_namespaced_least_privilege(rendered: dict[str, Path]) -> None:
    for name, path in rendered.items():
        roles: dict[str, list[dict[str, Any]]] = {}
        for role, rule in rbac_rules(documents(path)):
            roles.setdefault(role, []).append(rule)
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"{name} {role}: wildcard in {key}"
            assert "secrets" not in rule["resources"], f"{name} {role}: rights on Secrets"
        if name.startswith("kserve/"):
            continue
        assert roles["hybridml-deployer"] == [
            {
                "apiGroups": ["serving.kserve.io"],
                "resources": ["inferenceservices"],
                "verbs": ["get", "list", "create", "patch", "delete"],
            },
            {"apiGroups": ["serving.kserve.io"], "resources": ["servingruntimes"], "verbs": ["get", "create", "patch"]},
            {
                "apiGroups": ["serving.kserve.io"],
                "resources": ["inferencegraphs"],
                "verbs": ["get", "create", "patch", "delete"],
            },
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
        ], name
        assert {verb for rule in roles["hybridml-pipeline-runner"] for verb in rule["verbs"]} == {
            "get",
            "watch",
            "patch",
            "create",
        }, name


# (ServiceAccount, verb, group, resource, name, allowed) as the API server's RBAC decides them once applied.
ACCESS = [
    *(
        ("hybridml-deployer", verb, "serving.kserve.io", "inferenceservices", "", True)
        for verb in ("get", "list", "create", "patch", "delete")
    ),
    *(
        ("hybridml-deployer", verb, "serving.kserve.io", "servingruntimes", "", True)
        for verb in ("get", "create", "patch")
    ),
    ("hybridml-deployer", "watch", "serving.kserve.io", "inferenceservices", "", False),
    ("hybridml-deployer", "update", "serving.kserve.io", "inferenceservices", "", False),
    ("hybridml-deployer", "delete", "serving.kserve.io", "servingruntimes", "", False),
    *(
        ("hybridml-deployer", verb, "serving.kserve.io", "inferencegraphs", "", True)
        for verb in ("get", "create", "patch", "delete")
    ),
    ("hybridml-deployer", "list", "serving.kserve.io", "inferencegraphs", "", False),
    ("hybridml-deployer", "get", "apps", "deployments", "", True),
    *(("hybridml-deployer", verb, "apps", "deployments", "", False) for verb in ("list", "watch", "patch")),
    ("hybridml-deployer", "create", "", "pods/exec", "", False),
    *(("hybridml-pipeline-runner", verb, "", "pods", "", True) for verb in ("get", "watch", "patch")),
    ("hybridml-pipeline-runner", "list", "", "pods", "", False),
    ("hybridml-pipeline-runner", "delete", "", "pods", "", False),
    ("hybridml-pipeline-runner", "get", "", "pods/log", "", True),
    ("hybridml-pipeline-runner", "get", "", "configmaps", "kfp-launcher", True),
    ("hybridml-pipeline-runner", "get", "", "configmaps", "other", False),
    ("hybridml-pipeline-runner", "create", "argoproj.io", "workflowtaskresults", "", True),
    *(
        (account, verb, "", "secrets", "", False)
        for account in ("hybridml-deployer", "hybridml-pipeline-runner", "hybridml-mlflow", "hybridml-predictor")
        for verb in ("get", "list", "watch")
    ),
    ("hybridml-mlflow", "get", "", "pods", "", False),
    ("hybridml-predictor", "get", "serving.kserve.io", "inferenceservices", "", False),
]


def test_rbac_grants_exactly_what_each_job_needs(
    control_plane: ControlPlane, namespace: str, rendered: dict[str, Path]
) -> None:
    from kubernetes import client

    kept = [doc for doc in documents(rendered["helm/default.yaml"]) if doc["kind"] in ("Role", "RoleBinding")]
    path = rendered["helm/default.yaml"].parent / "rbac.yaml"
    path.write_text(yaml.safe_dump_all(kept))
    done = kubectl(control_plane, "apply", "--server-side", "-f", str(path))
    assert done.returncode == 0, done.stderr
    api = client.AuthorizationV1Api(control_plane.api_client())
    for account, verb, group, resource, name, allowed in ACCESS:
        resource, _, subresource = resource.partition("/")
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{namespace}:{account}",
                groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace,
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource or None,
                    name=name or None,
                ),
            )
        )
        status = api.create_subject_access_review(review).status
        assert status.allowed is allowed, (account, verb, group, resource, subresource, name, status.reason)


def test_control_port_is_open_only_to_the_deployer(rendered: dict[str, Path]) -> None:
    for name, path in rendered.items():
        if name.startswith("kserve/"):
            continue
        policies = {doc["metadata"]["name"]: doc for doc in documents(path) if doc["kind"] == "NetworkPolicy"}
        assert set(policies) == {
            "hybridml-default-deny-ingress",
            "hybridml-predictor",
            "hybridml-mlflow",
            "hybridml-postgresql",
        }, name
        assert policies["hybridml-default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
        ingress = policies["hybridml-predictor"]["spec"]["ingress"]
        assert ingress == [
            {"ports": [{"port": 8080, "protocol": "TCP"}]},
            {
                "from": [{"podSelector": {"matchLabels": {"hybridml.dev/role": "deployer"}}}],
                "ports": [{"port": 8081, "protocol": "TCP"}],
            },
        ], name


def test_kustomize_and_helm_render_the_same_objects(rendered: dict[str, Path]) -> None:
    for flavour in ("kind", "onprem", "aws"):
        kustomize = {(d["kind"], d["metadata"]["name"]) for d in documents(rendered[f"kustomize/{flavour}.yaml"])}
        helm = {(d["kind"], d["metadata"]["name"]) for d in documents(rendered[f"helm/{flavour}.yaml"])}
        # The chart generates PostgreSQL's password Secret (lookup keeps it); kustomize users create it (docs).
        assert ("Secret", "hybridml-postgresql") in helm - kustomize, flavour
        helm.discard(("Secret", "hybridml-postgresql"))
        # helm install needs the namespace before the release (namespace.create: only values-kind.yaml renders it).
        assert kustomize - {("Namespace", NAMESPACE)} == helm - {("Namespace", NAMESPACE)}, flavour
        assert (("Namespace", NAMESPACE) in helm) == (flavour == "kind"), flavour
        by_kustomize = {(d["kind"], d["metadata"]["name"]): d for d in documents(rendered[f"kustomize/{flavour}.yaml"])}
        by_helm = {(d["kind"], d["metadata"]["name"]): d for d in documents(rendered[f"helm/{flavour}.yaml"])}
        for key, doc in by_helm.items():
            if key == ("Secret", "hybridml-postgresql"):
                continue
            if key[0] == "Deployment":  # env order differs (strategic merge appends); compare as mappings
                ours, theirs = doc["spec"]["template"]["spec"], by_kustomize[key]["spec"]["template"]["spec"]
                envs = [{e["name"]: e for e in spec["containers"][0].pop("env")} for spec in (ours, theirs)]
                assert envs[0] == envs[1], (flavour, key)
            for field in ("spec", "rules", "roleRef", "data", "automountServiceAccountToken"):
                assert doc.get(field) == by_kustomize[key].get(field), (flavour, key, field)
            annotations = by_kustomize[key]["metadata"].get("annotations")
            assert doc["metadata"].get("annotations") == annotations, (flavour, key)
        for docs in (documents(rendered[f"kustomize/{flavour}.yaml"]), documents(rendered[f"helm/{flavour}.yaml"])):
            rule = next(d for d in docs if d["kind"] == "PrometheusRule")
            source = yaml.safe_load((ROOT / "src/hybridml/monitoring/prometheus/rules.yaml").read_text())
            assert rule["spec"] == source["spec"] and rule["metadata"]["namespace"] == NAMESPACE


def core_documents(rendered: dict[str, Path], out: Path) -> list[Path]:
    """Each rendered file without the custom resources (kubernetes-validate knows only core kinds)."""
    written = []
    for name, path in sorted(rendered.items()):
        docs = [d for d in documents(path) if d["apiVersion"].split("/")[0] not in CUSTOM_GROUPS]
        if docs:
            target = out / name.replace("/", "-")
            target.write_text(yaml.safe_dump_all(docs))
            written.append(target)
    return written


def test_kubernetes_validate_strict_on_core_kinds(rendered: dict[str, Path], tmp_path: Path) -> None:
    files = core_documents(rendered, tmp_path)
    assert len(files) == 7  # the kserve files hold only custom resources
    done = subprocess.run(
        [str(KUBE_VALIDATE), "--strict", "--kubernetes-version", KUBE_VERSION, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" passed for resource ") == sum(len(documents(path)) for path in files), done.stdout


def test_checkov_fixed_checks_pass(rendered: dict[str, Path], tmp_path: Path) -> None:
    if not os.access(CHECKOV, os.X_OK):
        pytest.skip(f"{CHECKOV} is not built (make aws-tools)")
    checks = [line.split("#")[0].strip() for line in CHECKOV_CHECKS.read_text().splitlines()]
    checks = [check for check in checks if check]
    folder = tmp_path / "core"
    folder.mkdir()
    core_documents(rendered, folder)
    command = [str(CHECKOV), "-d", str(folder), "--framework", "kubernetes", "--skip-download", "-o", "json"]
    done = subprocess.run(
        [*command, "--check", ",".join(checks)],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(done.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and summary["failed"] == 0 and summary["parsing_errors"] == 0, failed
    ran = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert ran == set(checks), f"checks that matched no resource: {sorted(set(checks) - ran)}"


def test_helm_install_with_postgresql_keeps_its_password(control_plane: ControlPlane, tmp_path: Path) -> None:
    """The chart, PostgreSQL on, installed for real in a restricted namespace; upgrade and reinstall keep the password.

    ``helm template`` cannot ``lookup`` (it prints a fresh password each time): install, upgrade and
    ``template --dry-run=server`` here read the Secret the first install wrote from the real API server.
    """
    from kubernetes import client

    from tests.integration.k8s.conftest import make_namespace

    if not os.access(HELM, os.X_OK):
        pytest.skip(f"{HELM} is not built (make {HELM.relative_to(ROOT)})")
    # The test API server, built from Go modules without version stamps, reports v0.0.0, which the chart's
    # kubeVersion (>=1.27) refuses at install: a copy without that one line.
    chart = tmp_path / "hybridml"
    shutil.copytree(CHART, chart)
    meta = (chart / "Chart.yaml").read_text()
    assert meta.count("\nkubeVersion: ") == 1
    (chart / "Chart.yaml").write_text("".join(line for line in meta.splitlines(True) if not line.startswith("kubeV")))
    namespace, runs = make_namespace(control_plane, prefix="pg"), make_namespace(control_plane, prefix="kfp")
    core = client.CoreV1Api(control_plane.api_client())
    assert core.read_namespace(namespace).metadata.labels.items() >= RESTRICTED.items()
    base = [str(HELM), "--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace]
    values = [
        "--set-json",
        f'postgresql.copySecretTo=["{runs}"]',
        "--set-json",
        f'networkPolicy.postgresqlClientNamespaces=["{runs}"]',
    ]

    def helm_run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*base, *args], capture_output=True, text=True, check=False, cwd=ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "would violate PodSecurity" not in done.stderr, done.stderr
        return done

    def passwords() -> list[str]:
        return [core.read_namespaced_secret("hybridml-postgresql", ns).data["password"] for ns in (namespace, runs)]

    installed = helm_run("install", "hybridml", str(chart), *values)
    assert f"Secret hybridml-postgresql (key password) in {namespace} and {runs}." in installed.stdout  # NOTES
    first = passwords()
    assert first[0] == first[1] and len(base64.b64decode(first[0])) == 32
    apps = client.AppsV1Api(control_plane.api_client())
    template = apps.read_namespaced_stateful_set("hybridml-postgresql", namespace).spec.template.spec
    assert template.security_context.run_as_non_root is True
    assert template.containers[0].security_context.read_only_root_filesystem is True
    service = core.read_namespaced_service("hybridml-postgresql", namespace)
    assert [(p.name, p.port) for p in service.spec.ports] == [("postgresql", 5432)]
    helm_run("upgrade", "hybridml", str(chart), *values)
    assert passwords() == first
    shown = helm_run("template", "hybridml", str(chart), "--dry-run=server", *values).stdout
    secrets = [d for d in yaml.safe_load_all(shown) if d and d["kind"] == "Secret"]
    assert [s["data"]["password"] for s in secrets] == first
    # Uninstall leaves the Secrets (resource-policy keep) with the volume; a reinstall adopts them, same password.
    helm_run("uninstall", "hybridml")
    assert passwords() == first
    helm_run("install", "hybridml", str(chart), *values)
    assert passwords() == first
    helm_run("uninstall", "hybridml")
