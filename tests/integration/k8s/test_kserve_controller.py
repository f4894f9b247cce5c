"""KServe's own controller (``cmd/manager``, Standard mode) reconciles what the kserve target applies.

Everything here is real except the kubelet: kube-controller-manager turns KServe's Deployments into Pods,
kube-scheduler binds them to kwok's fake Node, kwok marks them Running and Ready (no container runs), and
KServe's manager (built by ``scripts/build_kserve.sh``) creates the Deployment, Service and HorizontalPodAutoscaler
of each InferenceService, serves its webhooks to the API server and writes the status the target waits on.
See docs/kserve-controller.md.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from hybridml.core.schema import NUMERIC, FeatureSchema, FeatureSpec
from hybridml.deploy.config import KServeConfig
from hybridml.deploy.contract import ModelRef
from hybridml.deploy.kserve import render
from hybridml.deploy.kserve.render import Served
from hybridml.deploy.kserve.target import KServeTarget
from hybridml.errors import PermissionDeniedError
from tests.integration.k8s.conftest import make_namespace

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane, KServeController

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
SCHEMA = FeatureSchema("label", ("no", "yes"), (FeatureSpec("amount", NUMERIC, False),), 10, "sha256:0")
IMAGE = "registry.example/hybridml-predictor:1"
ISVC_LABEL = "serving.kserve.io/inferenceservice"


def eventually(probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    """``probe()``'s first truthy answer; fails after ``timeout`` seconds (a bound, not a measured time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = probe()
        if answer:
            return answer
        time.sleep(0.2)
    pytest.fail(f"no answer from {probe.__name__} within {timeout}s")


class Cluster:
    """A restricted namespace enrolled in KServe's webhooks, the project's ServingRuntime, a kserve target."""

    def __init__(self, plane: ControlPlane, kserve: KServeController) -> None:
        self.ns = make_namespace(plane, "restricted", prefix="ksc")
        kserve.enroll(plane, self.ns)
        api = plane.api_client()
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.hpa = client.AutoscalingV2Api(api)
        self.custom = client.CustomObjectsApi(api)
        # mode "auto": the target reads Standard from KServe's own inferenceservice-config.
        self.config = KServeConfig(
            namespace=self.ns,
            kserve_namespace=kserve.namespace,
            image=IMAGE,
            scale_metric="cpu",
            scale_target=70,
            ready_timeout_s=45.0,
            poll_s=0.5,
        )
        self.target = KServeTarget(self.config, api_client=api)
        # Through KServe's ServingRuntime validating webhook.
        runtime = render.serving_runtime(self.config)
        self.custom.create_namespaced_custom_object(GROUP, "v1alpha1", self.ns, "servingruntimes", runtime)

    def isvc(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        return obj

    def create(self, name: str, stable: str, canary: str | None = None, percent: int = 0) -> dict[str, Any]:
        """Create the target's rendering of ``name`` in the form KServe's validator accepts (see :func:`accepted`)."""
        served = Served(canary, f"s3://models/{name}/{canary}") if canary else None
        body = render.inference_service(
            self.config,
            name,
            render.STANDARD,
            Served(stable, f"s3://models/{name}/{stable}"),
            served,
            percent,
            ("amount",),
        )
        obj: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, accepted(body)
        )
        return obj


def accepted(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` as KServe v0.20's validating webhook accepts it: what render.py must change (docs/kserve-controller.md).

    * ``spec.predictor.model.name`` is refused ("the 'name' field is not allowed in standard predictor");
    * each ``spec.canary[].predictor`` needs a ``name`` (it names the canary's Deployment and Service), and must
      not set ``maxReplicas``, ``scaleMetric`` or ``scaleTarget`` (a canary runs a fixed number of replicas).
    """
    body = copy.deepcopy(body)
    body["spec"]["predictor"]["model"].pop("name", None)
    for canary in body["spec"].get("canary", []):
        for field in ("maxReplicas", "minReplicas", "scaleMetric", "scaleTarget"):
            canary["predictor"].pop(field, None)
        canary["predictor"]["name"] = "canary"
    return body


@pytest.fixture(scope="module")
def cluster(
    controller_manager: ControlPlane, scheduler: ControlPlane, kwok_node: str, kserve_controller: KServeController
) -> Cluster:
    return Cluster(controller_manager, kserve_controller)


def ref(version: str, name: str = "churn") -> ModelRef:
    return ModelRef(name, version, f"s3://models/{name}/{version}", SCHEMA, pipeline_run_id=f"run-{version}")


def owned_by(obj: Any, isvc: dict[str, Any]) -> bool:
    owners = obj.metadata.owner_references or []
    return [(o.kind, o.name, o.uid, o.controller) for o in owners] == [
        ("InferenceService", isvc["metadata"]["name"], isvc["metadata"]["uid"], True)
    ]


def test_kserve_refuses_the_inference_service_the_target_renders(cluster: Cluster) -> None:
    """KServe's validating webhook refuses the target's predictor (``model.name``): nothing is applied.

    A gap found against the real controller (docs/kserve-controller.md); the refusal also reads as a permission
    error, since an admission webhook denial is HTTP 403.
    """
    denied = r'admission webhook "inferenceservice-validator\.[^"]+" denied the request: the \'name\' field is not'
    with pytest.raises(PermissionDeniedError, match=rf"not allowed to patch inferenceservices .*{denied}"):
        cluster.target.deploy(ref("1", "refused"))

    names = [
        i["metadata"]["name"]
        for i in cluster.custom.list_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL)["items"]
    ]
    assert "refused" not in names


def test_an_inference_service_becomes_ready_with_deployment_service_and_hpa_made_by_kserve(cluster: Cluster) -> None:
    cluster.create("churn", "1")

    deployed = cluster.target.wait_until_ready("churn", 45.0, max_poll_s=0.5)

    assert (deployed.name, deployed.stable_version, deployed.canary_version) == ("churn", "1", None)
    assert (deployed.ready, deployed.detail) == (True, "stable 1 (Standard mode)")
    isvc = cluster.isvc("churn")
    status = isvc["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == conditions["PredictorReady"] == "True"
    assert status["observedGeneration"] == isvc["metadata"]["generation"]
    assert status["deploymentMode"] == "Standard"
    assert status["servingRuntimeName"] == "hybridml"
    # No Ingress or Istio here: the URL follows inferenceservice-config's domain template, the address the Service.
    assert deployed.endpoint == status["url"] == f"http://churn-{cluster.ns}.example.com"
    assert status["address"]["url"] == f"http://churn-predictor.{cluster.ns}.svc.cluster.local"
    model = status["modelStatus"]
    assert (model["transitionStatus"], model["states"]["activeModelState"]) == ("UpToDate", "Loaded")

    # KServe's Deployment runs the ServingRuntime's container with the model's overrides, in the pod template
    # the target asked for (restricted Pod Security: the real admission plugin let its Pods in).
    deployment = cluster.apps.read_namespaced_deployment("churn-predictor", cluster.ns)
    assert owned_by(deployment, isvc)
    pod = deployment.spec.template
    [container] = pod.spec.containers
    assert (container.name, container.image) == ("kserve-container", IMAGE)
    assert container.args[:2] == ["--model-uri", "file:///mnt/models"]
    assert container.resources.requests == {"cpu": "500m", "memory": "512Mi"}
    assert container.resources.limits == {"cpu": "1", "memory": "1Gi"}
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.metadata.labels[render.LABEL_VERSION] == "1"
    assert pod.metadata.annotations["prometheus.io/scrape"] == "true"
    assert deployment.status.available_replicas == 1

    pods = cluster.core.list_namespaced_pod(cluster.ns, label_selector=f"{ISVC_LABEL}=churn").items
    assert [p.status.phase for p in pods] == ["Running"]
    # The pod mutator (KServe's webhook) added the storage initializer that downloads storageUri.
    [init] = pods[0].spec.init_containers
    assert init.name == "storage-initializer"
    assert init.args[:1] == ["s3://models/churn/1"]

    service = cluster.core.read_namespaced_service("churn-predictor", cluster.ns)
    assert owned_by(service, isvc)
    assert service.spec.selector == {"app": "isvc.churn-predictor"}

    hpa = cluster.hpa.read_namespaced_horizontal_pod_autoscaler("churn-predictor", cluster.ns)
    assert owned_by(hpa, isvc)
    assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("Deployment", "churn-predictor")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 3)
    [metric] = hpa.spec.metrics
    assert (metric.resource.name, metric.resource.target.type, metric.resource.target.average_utilization) == (
        "cpu",
        "Utilization",
        70,
    )


def test_a_canary_splits_traffic_and_the_split_shows_in_status(cluster: Cluster) -> None:
    cluster.create("churn-ab", "1", "2", 20)

    deployed = cluster.target.wait_until_ready("churn-ab", 45.0, max_poll_s=0.5)

    assert (deployed.stable_version, deployed.canary_version, deployed.canary_percent) == ("1", "2", 20)
    assert deployed.ready is True
    status = cluster.isvc("churn-ab")["status"]
    assert [(s["name"], s["ready"], s["trafficPercent"]) for s in status["canaryStatuses"]] == [("canary", True, 20)]
    assert {c["type"]: c["status"] for c in status["conditions"]}["CanaryPredictorReady"] == "True"
    stable = cluster.apps.read_namespaced_deployment("churn-ab-predictor", cluster.ns)
    candidate = cluster.apps.read_namespaced_deployment("churn-ab-canary-predictor", cluster.ns)
    assert stable.spec.template.metadata.labels[render.LABEL_VERSION] == "1"
    assert candidate.spec.template.metadata.labels[render.LABEL_VERSION] == "2"
    assert (stable.status.available_replicas, candidate.status.available_replicas) == (1, 1)


def test_delete_removes_the_inference_service_and_kubernetes_collects_what_kserve_made(cluster: Cluster) -> None:
    cluster.create("gone", "1")
    cluster.target.wait_until_ready("gone", 45.0, max_poll_s=0.5)
    cluster.target.delete("gone")

    def collected() -> bool:
        deployments = cluster.apps.list_namespaced_deployment(cluster.ns, label_selector=f"{ISVC_LABEL}=gone").items
        isvcs = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL)["items"]
        return not deployments and "gone" not in [i["metadata"]["name"] for i in isvcs]

    eventually(collected)
    services = cluster.core.list_namespaced_service(cluster.ns, label_selector=f"{ISVC_LABEL}=gone").items
    hpas = cluster.hpa.list_namespaced_horizontal_pod_autoscaler(cluster.ns).items
    assert services == []
    assert "gone-predictor" not in [h.metadata.name for h in hpas]
