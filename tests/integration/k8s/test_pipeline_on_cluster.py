"""Issue 13, part 3: the committed pipeline run in simulated Kubeflow pods against real services.

The pipeline is ``hybridml.pipelines.training.training_pipeline`` run through kfp.local's SubprocessRunner, each
step forked from the run's warm zygote exactly as ``hybridml run`` does (``pipelines/local_run.py``). What makes
each step a "pod": kfp.local starts every step as ``sys.executable`` (a subprocess inheriting the environment),
which here is a small script that gives the step ``KFP_POD_NAME``, the pod's other variables and its own, fresh
``HYBRIDML_HOME`` before it hands over to the run's launcher (which passes exactly that environment to the forked
step), so no step sees another's disk. A ``sitecustomize.py`` would not do: the launcher runs with ``-S``.
Artifacts pass through kfp.local's pipeline root as they pass through KFP's object store; the progress file the
local runner reads (``HYBRIDML_RUN_LOG``) is the test's only other shared path.

With the defaults the run stops at preprocess with the one line naming the parameter (the same refusal through
``hybridml run``: tests/integration/pipeline/test_bad_input.py). With an ``mlflow server`` on PostgreSQL from
Debian, Optuna on PostgreSQL and ``deploy_target=kserve`` against the test kube-apiserver, the steps reach the
API server as the run's ServiceAccount bound to the shipped Role (src/hybridml/deploy/kserve/rbac.yaml) through
``KUBECONFIG`` (``deploy_config`` names no kubeconfig: in a pod that is the in-cluster config). KServe's controller
does not run here: a thread plays it, and where KServe would start the predictor it starts the project's own
predictor on 127.0.0.1 with the registered version, so the inference step gets real scores back.

Below the threshold the same setup runs the HPO branch (plan, two workers, best) on the PostgreSQL study. kfp.local
does not retry a failed task, so the retry is shown at the step level: the HPO worker step, started as a process,
is SIGKILLed mid-search and started again with the same arguments, and the trial count continues.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from hybridml.deploy.kserve import render
from hybridml.pipelines.local_run import read_events, root_logging_kept
from hybridml.pipelines.zygote import warm_executable
from hybridml.steps.runtime import RUN_LOG_ENV

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from tests.integration.k8s.conftest import write_kubeconfig  # noqa: E402
from tests.integration.k8s.kserve_bed import (  # noqa: E402
    GROUP,
    PLURAL,
    VERSION,
    Controller,
    ControllerThread,
    make_namespace,
)
from tests.integration.registry.conftest import (  # noqa: E402
    PG_BIN,
    Service,
    as_postgres,
    free_port,
    start_mlflow_server,
    start_postgres,
)

RBAC = Path(render.__file__).with_name("rbac.yaml")
RUNNER = "hybridml-pipeline-runner"  # the run's ServiceAccount (hybridml submit --service-account)
PREDICTOR_SA = "hybridml-predictor"


def pod_executable(path: Path, python: str, homes: Path, env: dict[str, str]) -> Path:
    """Write the script kfp.local runs as ``python``: each step a pod with a fresh home, then ``python`` itself."""
    exports = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    path.write_text(
        "#!/bin/sh\n"
        f"HYBRIDML_HOME=$(mktemp -d {shlex.quote(str(homes))}/home-XXXXXXXX) || exit 1\n"
        'export HYBRIDML_HOME KFP_POD_NAME="hybridml-training-sim-${HYBRIDML_HOME##*/}"\n'
        f'{exports}exec {shlex.quote(python)} "$@"\n'
    )
    path.chmod(0o755)
    return path


@dataclass(frozen=True)
class Stack:
    """What a cluster install gives the run: MLflow (PostgreSQL behind it) and a PostgreSQL database for Optuna."""

    tracking_uri: str
    optuna_uri: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    services: list[Service] = []
    store_uri, stop_postgres = start_postgres(services)
    try:
        port = store_uri.rsplit(":", 1)[1].split("/")[0]
        createdb = [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", port, "-U", "postgres", "optuna"]
        subprocess.run(as_postgres(createdb), check=True, capture_output=True)
        root = tmp_path_factory.mktemp("mlflow")
        tracking_uri = start_mlflow_server("mlflow-on-postgres", store_uri, root, services)
        yield Stack(tracking_uri, store_uri.rsplit("/", 1)[0] + "/optuna")
    finally:
        for service in services:
            service.stop()
        stop_postgres()


class ServingController(Controller):
    """KServe's controller as played here, plus what its pods would do: serve the stable version for real.

    The predictor is the project's own server (``python -m hybridml.serving``, what the ServingRuntime's image
    runs) on 127.0.0.1 with the bundle of the version the InferenceService names, read back from the registry.
    """

    def __init__(self, plane: ControlPlane, namespace: str, tracking_uri: str, work: Path) -> None:
        super().__init__(plane, namespace)
        self.tracking_uri = tracking_uri
        self.work = work
        self.servers: dict[tuple[str, str], str] = {}
        self.services: list[Service] = []
        self.errors: list[str] = []
        self.python = sys.executable  # taken now: a run in pods points sys.executable at its pod script

    def reconcile(self, obj: dict[str, Any]) -> None:
        try:
            super().reconcile(obj)
        except ApiException:
            raise  # changed meanwhile: the thread tries again next round
        except Exception as exc:  # kept for the test to report; the thread must keep running
            self.errors.append(f"{type(exc).__name__}: {exc}")
            raise ApiException(reason="playing the controller failed") from exc

    def payload_log(self, name: str, version: str) -> Path:
        return self.work / f"{name}-{version}" / "payload.jsonl"

    def url(self, obj: dict[str, Any]) -> str:
        from hybridml.registry import Registry

        name = obj["metadata"]["name"]
        served = render.Served.from_json(obj["metadata"]["annotations"][render.ANN_STABLE])
        assert served is not None
        key = (name, served.version)
        if key not in self.servers:
            folder = self.work / f"{name}-{served.version}"
            Registry(self.tracking_uri, user="kserve").download(name, int(served.version), folder / "model")
            port = free_port()
            service = Service(f"predictor {name}/{served.version}")
            self.services.append(service)
            service.start(
                [
                    self.python, "-m", "hybridml.serving", "--model-dir", str(folder / "model"),
                    "--model-name", name, "--model-version", served.version, "--bind-port", str(port),
                    "--payload-log", str(self.payload_log(name, served.version)),
                ],
                folder / "predictor.log",
            )  # fmt: skip
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
                if time.monotonic() > deadline or service.process is None or service.process.poll() is not None:
                    raise RuntimeError(f"predictor did not start:\n{service.tail()}")
                time.sleep(0.2)
            self.servers[key] = url
        return self.servers[key]

    def stop(self) -> None:
        for service in self.services:
            service.stop()


@dataclass(frozen=True)
class Cluster:
    """The run's namespace on the test API server, the kubeconfig its pods use, and the controller played."""

    namespace: str
    kubeconfig: Path
    controller: ServingController


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A namespace with the shipped deployer Role bound to the run's ServiceAccount, and a kubeconfig bearing its
    token (what a pod's in-cluster config would give it)."""
    ns = make_namespace(control_plane)
    api = control_plane.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    role = next(d for d in yaml.safe_load_all(RBAC.read_text()) if d["metadata"]["name"] == "hybridml-deployer")
    rbac.create_namespaced_role(ns, role)
    for account in (RUNNER, PREDICTOR_SA):
        core.create_namespaced_service_account(ns, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account)))
    binding = {
        "metadata": {"name": "hybridml-deployer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "hybridml-deployer"},
        "subjects": [{"kind": "ServiceAccount", "name": RUNNER, "namespace": ns}],
    }
    rbac.create_namespaced_role_binding(ns, binding)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = core.create_namespaced_service_account_token(RUNNER, ns, request).status.token
    work = tmp_path_factory.mktemp("cluster")
    kubeconfig = work / "kubeconfig"
    write_kubeconfig(kubeconfig, control_plane.server, control_plane.ca_file, {RUNNER: token}, namespace=ns)
    controller = ServingController(control_plane, ns, stack.tracking_uri, work)
    thread = ControllerThread(controller)
    try:
        yield Cluster(ns, kubeconfig, controller)
    finally:
        thread.stop()
        controller.stop()


@dataclass
class PodRun:
    """One run in simulated pods: its summary (None when a step failed), progress events and the steps' homes."""

    summary: dict[str, Any] | None
    events: list[dict[str, Any]]
    homes: list[Path]
    error: str | None
    tasks: list[str]  # as kfp.local names them when it starts each

    @property
    def steps(self) -> list[str]:
        return [e["step"] for e in self.events if e["event"] == "start"]


def run_in_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **arguments: Any) -> PodRun:
    """Run the committed pipeline with ``arguments`` (the rest: its compiled defaults) in simulated pods."""
    from kfp import local

    from hybridml.pipelines.training import training_pipeline

    homes = tmp_path / "homes"
    homes.mkdir()
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(RUN_LOG_ENV, str(events))
    monkeypatch.setenv("HYBRIDML_DAEMON", "0")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    summary, error = None, None
    with (
        (tmp_path / "pipeline.log").open("w") as log,
        contextlib.redirect_stdout(log),
        warnings.catch_warnings(),
        warm_executable(tmp_path / "zygote", True) as launcher,
        root_logging_kept(),
    ):
        # Set and put back by hand, not with monkeypatch: warm_executable has already replaced sys.executable and
        # restores it on exit, so monkeypatch would "restore" the zygote's launcher after the test, for every test
        # after it (which then start their servers next to a deleted path).
        zygote_python = sys.executable
        sys.executable = str(pod_executable(tmp_path / "pod", launcher or sys.executable, homes, env))
        warnings.filterwarnings("ignore", module=r"kfp\.local\..*")
        try:
            summary = json.loads(training_pipeline(**arguments).output)
        except RuntimeError as exc:
            error = str(exc)
        finally:
            sys.executable = zygote_python
    text = re.sub(r"\x1b\[[0-9;]*m", "", (tmp_path / "pipeline.log").read_text())  # kfp.local colours names
    started = re.findall(r"Executing task '([^']+)'", text)
    return PodRun(summary, read_events(events), sorted(homes.iterdir()), error, started)


def test_with_the_compiled_defaults_the_first_step_stops_with_the_parameter_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_in_pods(tmp_path, monkeypatch, {})
    assert run.summary is None and run.error is not None
    assert run.steps == ["preprocess"]
    (failure,) = [e for e in run.events if e["event"] == "error"]
    assert failure["step"] == "preprocess"
    assert failure["kind"] == "InvalidInputError"
    assert failure["message"] == (
        "this step runs in a Kubernetes pod, whose disk is its own and ends with it: the MLflow store"
        f" 'sqlite:///{run.homes[0]}/mlflow.db' would be a new, empty one in every step; set the pipeline parameter"
        " tracking_uri to your MLflow server (for example http://mlflow.hybridml.svc.cluster.local:5000)"
    )
    # The step's default store was in its own, fresh home, and it wrote nothing there before refusing.
    assert len(run.homes) == 1 and list(run.homes[0].iterdir()) == []


def _isvcs(plane: ControlPlane, ns: str) -> list[dict[str, Any]]:
    custom = client.CustomObjectsApi(plane.api_client())
    return list(custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"])


def test_on_the_cluster_services_the_run_registers_approves_and_applies_one_inference_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, control_plane: ControlPlane, stack: Stack, cluster: Cluster
) -> None:
    from hybridml.registry import Registry

    name = "churn-on-cluster"
    deploy_config = {
        "target": "kserve",
        "namespace": "hybridml",  # the cluster default; kserve_namespace overrides it
        "mode": "Standard",
        "storage_uri_prefix": "s3://models",
        "image": "registry.example/hybridml-predictor:1",
        "poll_s": 0.5,
        "ready_timeout_s": 90.0,
    }
    run = run_in_pods(
        tmp_path,
        monkeypatch,
        {"KUBECONFIG": str(cluster.kubeconfig)},
        model_name=name,
        tracking_uri=stack.tracking_uri,
        hpo_storage=stack.optuna_uri,
        deploy_target="kserve",
        deploy_config=json.dumps(deploy_config),
        kserve_namespace=cluster.namespace,
        kserve_service_account=PREDICTOR_SA,
        predict_rows=3,
    )
    assert cluster.controller.errors == []
    assert run.error is None, (run.error, [e for e in run.events if e["event"] == "error"])
    steps = ["preprocess", "train", "evaluate", "register (register)", "approve", "deploy", "wait until ready"]
    assert run.steps[: len(steps)] == steps
    assert sorted(run.steps[len(steps) :]) == ["inference", "summary"]
    # Every step ran in its own home and left no MLflow or Optuna state on its disk.
    assert len(run.homes) == len(run.tasks)
    assert not [p for home in run.homes for p in home.rglob("*") if p.suffix == ".db" or p.name == "mlruns"]

    registry = Registry(stack.tracking_uri, user="test")
    (version,) = registry.list_versions(name)
    assert (version.version, version.status, version.branch) == (1, "Approved", "register")
    assert version.pipeline_run_id

    (isvc,) = _isvcs(control_plane, cluster.namespace)
    meta = isvc["metadata"]
    assert meta["name"] == name
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "hybridml",
        "hybridml.dev/model": name,
        "hybridml.dev/version": "1",
    }
    stable = json.loads(meta["annotations"][render.ANN_STABLE])
    assert stable == {"version": "1", "storageUri": f"s3://models/{name}/1", "pipelineRun": version.pipeline_run_id}
    assert meta["annotations"][render.MODE_ANNOTATION] == "Standard"
    assert isvc["spec"]["predictor"]["serviceAccountName"] == PREDICTOR_SA
    assert "canary" not in isvc["spec"]
    managers = {entry["manager"] for entry in meta["managedFields"] if entry["operation"] == "Apply"}
    assert managers == {"hybridml"}
    runtime = client.CustomObjectsApi(control_plane.api_client()).get_namespaced_custom_object(
        GROUP, "v1alpha1", cluster.namespace, "servingruntimes", "hybridml"
    )
    assert runtime["spec"]["containers"][0]["image"] == deploy_config["image"]

    endpoint = cluster.controller.servers[(name, "1")]
    summary = run.summary
    assert summary is not None
    assert (summary["model_name"], summary["model_version"], summary["approval_status"]) == (name, 1, "Approved")
    assert summary["branch"] == "register" and summary["endpoint"] == endpoint
    # The scores came from the predictor serving version 1: its payload log holds the one request, three rows.
    (record,) = [json.loads(line) for line in cluster.controller.payload_log(name, "1").read_text().splitlines()]
    assert (record["model"], record["version"], len(record["inputs"])) == (name, "1", 3)
    assert summary["prediction"] == record["outputs"][0]

    where = json.loads(version.tags["deployment"])
    assert where == {"target": "kserve", "endpoint": endpoint}
    deployments = [e for e in registry.history(name, 1) if e.action == "deployment"]
    assert [(e.actor, e.detail, json.loads(e.reason)) for e in deployments] == [
        ("deployer", f"kserve {name}: stable at 100%", where)
    ]


_STORAGES: dict[str, Any] = {}


def _study(stack: Stack, name: str) -> Any:
    """The study as stored now, through one storage per database: a storage per call (an engine and its pool each)
    polled every 50 ms ran PostgreSQL out of connections ("too many clients already") on a loaded machine."""
    import optuna

    if stack.optuna_uri not in _STORAGES:
        _STORAGES[stack.optuna_uri] = optuna.storages.RDBStorage(stack.optuna_uri)
    return optuna.load_study(study_name=name, storage=_STORAGES[stack.optuna_uri])


def test_below_the_threshold_the_hpo_branch_runs_its_workers_on_the_postgresql_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stack: Stack, cluster: Cluster
) -> None:
    import optuna

    from hybridml.core import hpo
    from hybridml.core.hpo import WORKER_ATTR
    from hybridml.registry import Registry

    name = "churn-hpo-on-cluster"
    run = run_in_pods(
        tmp_path,
        monkeypatch,
        {"KUBECONFIG": str(cluster.kubeconfig)},
        model_name=name,
        tracking_uri=stack.tracking_uri,
        hpo_storage=stack.optuna_uri,
        deploy_target="kserve",
        deploy_config=json.dumps({"target": "kserve", "mode": "Standard", "storage_uri_prefix": "s3://models"}),
        kserve_namespace=cluster.namespace,
        threshold=1.0,  # no model reaches it: the HPO branch runs, and the version stays unapproved
        n_trials=4,
        hpo_workers=2,
        model_type="logistic_regression",
    )
    assert run.error is None, (run.error, [e for e in run.events if e["event"] == "error"])
    assert sorted(s for s in run.steps if s.startswith("hpo")) == [
        "hpo best",
        "hpo plan",
        "hpo worker 0",
        "hpo worker 1",
    ]
    assert "deploy" not in run.steps
    assert len(run.homes) == len(run.tasks)
    summary = run.summary
    assert summary is not None
    # Below the threshold the policy leaves the version to a person: nothing is deployed.
    pending = ("hpo", "PendingManualApproval", None)
    assert (summary["branch"], summary["approval_status"], summary["endpoint"]) == pending
    (version,) = Registry(stack.tracking_uri, user="test").list_versions(name)
    study = _study(stack, f"hybridml-{version.pipeline_run_id}")
    finished = study.get_trials(states=hpo.FINISHED)
    assert len(finished) == 4
    # A worker that lost the race for the last trial puts its extra one back unrun (WAITING): at most one here.
    extra = [t for t in study.trials if t not in finished]
    assert len(extra) <= 1 and all(t.state == optuna.trial.TrialState.WAITING for t in extra)
    assert {t.user_attrs[WORKER_ATTR] for t in finished} <= {0, 1}


WORKER = """\
import json, sys
from hybridml.steps import training
print(json.dumps(training.search_worker(**json.loads(sys.argv[1]))))
"""


def test_a_killed_hpo_worker_is_retried_and_the_trial_count_continues_on_postgresql(
    tmp_path: Path, stack: Stack
) -> None:
    """The HPO worker step's pod dies mid-search (SIGKILL, no clean-up); its retry resumes the PostgreSQL study."""
    import optuna

    from hybridml.steps import prepare, training

    paths = {k: str(tmp_path / f"{k}.parquet") for k in ("train", "valid", "test")}
    prepare.preprocess(
        data_uri="", target="", seed=3, test_size=0.2, threshold=0.75, model_name="retry",
        tracking_uri=stack.tracking_uri, train_path=paths["train"], valid_path=paths["valid"], test_path=paths["test"],
        schema_path=str(tmp_path / "schema.json"),
    )  # fmt: skip
    n_trials, common = 12, {"tracking_uri": stack.tracking_uri, "experiment": "retry"}
    plan = training.plan_search(
        model_type="xgboost", n_trials=n_trials, timeout_s=600, storage=stack.optuna_uri, seed=3, workers=1,
        pipeline_run_id=tmp_path.name, home=str(tmp_path), **common,
    )  # fmt: skip
    (item,) = plan.workers
    arguments = json.dumps(
        {
            "train_path": paths["train"], "valid_path": paths["valid"], "schema_path": str(tmp_path / "schema.json"),
            "model_type": "xgboost", "seed": 3, "worker": item["worker"], "storage": item["storage"],
            "study_name": item["study"], "run_id": item["run_id"], "timeout_s": 600.0, **common,
        }
    )  # fmt: skip
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    first = subprocess.Popen([sys.executable, "-c", WORKER, arguments], stdout=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while len(_study(stack, plan.study_name).get_trials(states=done)) < 2:
        assert first.poll() is None and time.monotonic() < deadline, "the first attempt ended before it was killed"
        time.sleep(0.05)
    first.kill()  # what a node failure does to the pod: no handler runs, a trial may be left RUNNING
    first.wait()
    before = {t.number: (t.state, t.value) for t in _study(stack, plan.study_name).get_trials(states=done)}
    assert 2 <= len(before) < n_trials

    retry = subprocess.run([sys.executable, "-c", WORKER, arguments], capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stderr[-2000:]
    ran = json.loads(retry.stdout.strip().splitlines()[-1])
    study = _study(stack, plan.study_name)
    # The count continues: the retry ran only what was owed, and the trials finished before the kill stand.
    assert ran == n_trials - len(before)
    assert len(study.trials) == len(study.get_trials(states=done)) == n_trials
    assert {t.number: (t.state, t.value) for t in study.trials if t.number in before} == before
