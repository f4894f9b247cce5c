"""`hybridml deploy|endpoints|ab --target kserve` through the real CLI against the real kube-apiserver.

The CLI runs in-process (typer's CliRunner) with a fresh home holding an MLflow registry on SQLite; the
cluster comes from the test control plane's kubeconfig via ``--kubeconfig``/``--namespace``. KServe's controller
is played by a thread writing each InferenceService's status (the CLI really sleeps between polls).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from hybridml.deploy.config import KServeConfig
from hybridml.deploy.kserve import render
from hybridml.deploy.kserve.render import Served

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane
    from tests.integration.sagemaker.conftest import RegistryHome, SmBundles

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

from tests.integration.k8s.kserve_bed import ControllerThread  # noqa: E402
from tests.integration.k8s.test_kserve_target import IMAGE, Bed  # noqa: E402
from tests.integration.sagemaker.conftest import registry_home, sm_bundles  # noqa: E402, F401 - the registry

PREFIX = "s3://published/models"
GROUP = "serving.kserve.io"


@dataclass
class Cli:
    """The CLI against one bed: ``run(*args)`` -> (exit code, stdout, stderr); the registry to read back."""

    bed: Bed
    home: RegistryHome
    config_file: Path
    plane: ControlPlane

    def run(self, *args: str, cluster: bool = True) -> tuple[int, str, str]:
        from typer.testing import CliRunner

        import hybridml.cli

        extra = []
        if cluster:  # the bed's cluster: the config file, its namespace and the control plane's kubeconfig
            extra = ["--deploy-config", str(self.config_file), "--namespace", self.bed.ns]
            extra += ["--kubeconfig", str(self.plane.kubeconfig)]
        result = CliRunner().invoke(hybridml.cli.app, ["--home", str(self.home.home), *args, *extra])
        return result.exit_code, result.stdout, result.stderr

    def config(self) -> KServeConfig:
        raw = yaml.safe_load(self.config_file.read_text())
        raw.pop("target")
        return KServeConfig(namespace=self.bed.ns, kubeconfig=str(self.plane.kubeconfig), **raw)


@pytest.fixture
def cli(
    control_plane: ControlPlane, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cli]:
    monkeypatch.setenv("HYBRIDML_DAEMON", "0")
    home: RegistryHome = request.getfixturevalue("registry_home")
    bed = Bed(control_plane)
    settings = {
        "target": "kserve",
        "kserve_namespace": bed.kserve_ns,
        "image": IMAGE,
        "storage_uri_prefix": PREFIX,
        "ready_timeout_s": 20,
        "poll_s": 0.2,
    }
    config_file = tmp_path / "kserve.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    running = ControllerThread(bed.controller)
    try:
        yield Cli(bed, home, config_file, control_plane)
    finally:
        running.stop()


def register(home: RegistryHome, bundle: Path, name: str, key: str, approve: bool = True) -> int:
    """Register ``bundle`` as a new version of ``name`` (``key``: its run key), Approved unless told otherwise."""
    import mlflow

    from hybridml.core.model import read_bundle
    from hybridml.registry import Registry
    from hybridml.steps import release

    mlflow_client = mlflow.MlflowClient(home.tracking_uri)
    experiment = mlflow_client.get_experiment_by_name("sagemaker")
    assert experiment is not None
    run_id = mlflow_client.create_run(experiment.experiment_id).info.run_id
    registry = Registry(home.tracking_uri, user="alice")
    model_uri = registry.log_bundle(run_id, read_bundle(bundle))
    mlflow_client.set_terminated(run_id)
    version: int = release.register(
        model_name=name, model_uri=model_uri, run_id=run_id, roc_auc=0.95, data_hash="sha256:x",
        pipeline_run_id=f"p-{key}", branch="direct", run_key=f"p-{key}/direct", tracking_uri=home.tracking_uri,
    ).model_version  # fmt: skip
    if approve:
        registry.set_status(name, version, "Approved", reason="ok")
    return version


def history(cli: Cli, name: str, version: int, after: int = 0) -> list[tuple[str, str]]:
    from hybridml.registry import Registry

    events = Registry(cli.home.tracking_uri, user="alice").history(name, version)
    return [(e.action, e.detail) for e in events if e.action == "deployment"][after:]


def served(name: str, version: int, key: str) -> Served:
    """What the InferenceService says of ``version``: its published URI and the pipeline run that registered it."""
    return Served(str(version), f"{PREFIX}/{name}/{version}", f"p-{key}")


def predictor_pods(isvc: dict[str, Any], runtime: dict[str, Any]) -> list[dict[str, Any]]:
    """The predictor pods KServe builds from the applied objects: the runtime's container under each predictor.

    KServe merges the model's fields (resources, securityContext) over the runtime's container and puts the
    predictor's pod fields on the pod. (It also adds its own storage-initializer init container, configured by
    KServe, not by this project: not part of these pods.)
    """
    predictors = [isvc["spec"]["predictor"], *(c["predictor"] for c in isvc["spec"].get("canary") or [])]
    pods = []
    for index, spec in enumerate(predictors):
        container = {**runtime["spec"]["containers"][0]}
        container["resources"] = spec["model"]["resources"]
        container["securityContext"] = spec["model"]["securityContext"]
        body: dict[str, Any] = {"securityContext": spec["securityContext"], "containers": [container]}
        if "serviceAccountName" in spec:
            body["serviceAccountName"] = spec["serviceAccountName"]
        name = isvc["metadata"]["name"] + ("-predictor" if index == 0 else "-canary-predictor")
        metadata = {"name": name, "labels": spec["labels"], "annotations": spec["annotations"]}
        pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": body})
    return pods


@pytest.fixture
def bundles(request: pytest.FixtureRequest) -> SmBundles:
    found: SmBundles = request.getfixturevalue("sm_bundles")
    return found


def test_deploy_canary_status_promote_rollback_delete_by_hand(cli: Cli, bundles: SmBundles) -> None:
    one = register(cli.home, bundles.v1, "kcli", "kcli-1")
    two = register(cli.home, bundles.v1, "kcli", "kcli-2")
    from hybridml.core.model import read_bundle

    features = tuple(read_bundle(bundles.v1).schema.names)
    config = cli.config()

    code, out, err = cli.run("deploy", "--target", "kserve", "--model", f"kcli/{one}", "--json")
    assert code == 0, err
    assert json.loads(out)["stable_version"] == str(one)
    code, out, err = cli.run("deploy", "--target", "kserve", "--model", f"kcli/{two}", "--canary", "30", "--json")
    assert code == 0, err
    deployed = json.loads(out)
    assert (deployed["stable_version"], deployed["canary_version"], deployed["canary_percent"], deployed["ready"]) == (
        str(one),
        str(two),
        30,
        True,
    )
    stored = cli.bed.stored("kcli")
    wanted = render.inference_service(
        config, "kcli", "Standard", served("kcli", one, "kcli-1"), served("kcli", two, "kcli-2"), 30, features
    )
    assert stored["spec"] == wanted["spec"]
    assert stored["metadata"]["labels"] == wanted["metadata"]["labels"]
    assert stored["metadata"]["annotations"] == wanted["metadata"]["annotations"]
    assert stored["spec"]["canary"][0]["trafficPercent"] == 30
    assert json.loads(stored["metadata"]["annotations"][render.ANN_CANARY]) == {
        "version": str(two),
        "storageUri": f"{PREFIX}/kcli/{two}",
        "pipelineRun": "p-kcli-2",
    }

    # Pod Security: the predictor pods of what was applied (stable and canary) pass the real admission plugin
    # of the bed's namespace (enforce: restricted), and are what render.pod says.
    runtime = cli.bed.custom.get_namespaced_custom_object(GROUP, "v1alpha1", cli.bed.ns, "servingruntimes", "hybridml")
    pods = predictor_pods(stored, runtime)
    assert [p["spec"] for p in pods] == [
        render.pod(config, "kcli", served("kcli", one, "kcli-1"))["spec"],
        render.pod(config, "kcli", served("kcli", two, "kcli-2"))["spec"],
    ]
    namespace = client.CoreV1Api(cli.plane.api_client()).read_namespace(cli.bed.ns)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    for pod in pods:
        client.CoreV1Api(cli.plane.api_client()).create_namespaced_pod(cli.bed.ns, pod, dry_run="All")

    code, out, err = cli.run("endpoints", "status", "kcli", "--target", "kserve", "--json")
    assert code == 0, err
    assert json.loads(out) == {k: v for k, v in deployed.items() if k != "changed"}
    code, out, err = cli.run("endpoints", "promote", "kcli", "--target", "kserve", "--json")
    assert code == 0, err
    assert (json.loads(out)["stable_version"], json.loads(out)["canary_version"]) == (str(two), None)
    promoted = render.inference_service(config, "kcli", "Standard", served("kcli", two, "kcli-2"), features=features)
    assert cli.bed.stored("kcli")["spec"] == promoted["spec"]

    assert cli.run("deploy", "--target", "kserve", "--model", f"kcli/{one}", "--canary", "20", "--json")[0] == 0
    code, out, err = cli.run("endpoints", "rollback", "kcli", "--target", "kserve", "--json")
    assert code == 0, err
    assert (json.loads(out)["stable_version"], json.loads(out)["canary_version"]) == (str(two), None)
    code, out, err = cli.run("endpoints", "list", "--target", "kserve", "--json")
    assert code == 0, err
    assert [(d["name"], d["stable_version"], d["ready"]) for d in json.loads(out)] == [("kcli", str(two), True)]

    code, _, err = cli.run("endpoints", "delete", "kcli", "--target", "kserve")
    assert (code, err.strip()) == (0, "deleted endpoint kcli")
    assert cli.bed.names() == []

    assert history(cli, "kcli", one) == [
        ("deployment", "kserve kcli: stable at 100%"),
        ("deployment", "kserve kcli: canary at 20%"),
        ("deployment", f"kserve kcli: canary rolled back, stable {two} at 100%"),
    ]
    assert history(cli, "kcli", two) == [
        ("deployment", "kserve kcli: canary at 30%"),
        ("deployment", "kserve kcli: canary promoted, stable at 100%"),
        ("deployment", "kserve kcli: deleted"),
    ]


def test_cluster_flags_are_refused_for_targets_without_a_cluster(cli: Cli) -> None:
    for args in (("endpoints", "list", "--target", "local"), ("deploy", "--target", "local", "--model", "x/1")):
        code, _, err = cli.run(*args, "--namespace", "ns", cluster=False)
        assert code == 2
        assert "--namespace: only for --target kserve (the local target has no cluster)" in err
    args = ("endpoints", "list", "--target", "sagemaker", "--kubeconfig", "k", "--context", "c")
    code, _, err = cli.run(*args, cluster=False)
    assert code == 2
    assert "--kubeconfig, --context: only for --target kserve (the sagemaker target has no cluster)" in err


def test_ab_start_and_stop_by_hand_record_both_versions(cli: Cli, bundles: SmBundles) -> None:
    one = register(cli.home, bundles.v1, "kab", "kab-1")
    two = register(cli.home, bundles.v1, "kab", "kab-2")
    code, out, err = cli.run(
        "ab", "start", "--name", "kab-ab", "--a", f"kab/{one}", "--b", f"kab/{two}", "--split", "25", "--json"
    )
    assert code == 0, err
    started = json.loads(out)
    assert [(v["service"], v["weight"], v["created"]) for v in started["variants"]] == [
        ("kab", 75, True),
        (f"kab-v{two}", 25, True),
    ]
    stored = cli.bed.custom.get_namespaced_custom_object(GROUP, "v1alpha1", cli.bed.ns, "inferencegraphs", "kab-ab")
    assert stored["spec"]["nodes"]["root"]["steps"] == [
        {"name": "a", "serviceName": "kab", "weight": 75},
        {"name": "b", "serviceName": f"kab-v{two}", "weight": 25},
    ]
    assert cli.bed.stored(f"kab-v{two}")["spec"]["predictor"]["model"]["storageUri"] == f"{PREFIX}/kab/{two}"

    code, out, err = cli.run("ab", "stop", "--name", "kab-ab", "--json")
    assert code == 0, err
    stopped = json.loads(out)
    assert (stopped["deleted_services"], stopped["kept_services"]) == (["kab", f"kab-v{two}"], [])
    assert cli.bed.names() == []
    started_detail = f"kserve ab kab-ab started: A kab/{one} 75% / B kab/{two} 25%"
    stopped_detail = f"kserve ab kab-ab stopped: deleted the graph and kab, kab-v{two}"
    for version in (one, two):
        assert history(cli, "kab", version) == [("deployment", started_detail), ("deployment", stopped_detail)]


def test_ab_start_refuses_unknown_unapproved_and_local(cli: Cli, bundles: SmBundles) -> None:
    one = register(cli.home, bundles.v1, "kab2", "kab2-1")
    pending = register(cli.home, bundles.v1, "kab2", "kab2-2", approve=False)
    start = ("ab", "start", "--name", "kab2-ab", "--a", f"kab2/{one}")
    code, _, err = cli.run(*start, "--b", "kab2/99")
    assert code == 3 and "kab2" in err and "99" in err
    code, _, err = cli.run(*start, "--b", f"kab2/{pending}")
    assert code == 4
    assert f"kab2 version {pending} is PendingManualApproval, only Approved versions are deployed" in err
    code, _, err = cli.run(*start, "--b", f"kab2/{one}")
    assert code == 2 and f"A and B are the same version kab2/{one}" in err
    code, _, err = cli.run(*start, "--b", f"kab2/{pending}", "--target", "local", cluster=False)
    assert code == 2
    assert "use --target kserve (the local target has no such router" in err
    code, _, err = cli.run("ab", "stop", "--name", "kab2-ab")
    assert code == 3 and f"no A/B graph 'kab2-ab' in namespace '{cli.bed.ns}'" in err
    assert cli.bed.names() == []
    assert history(cli, "kab2", one) == []
