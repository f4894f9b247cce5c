"""KServe's own controller (``cmd/manager``, Standard mode) reconciles what the kserve target applies.

Everything here is real except the kubelet: kube-controller-manager turns KServe's Deployments into Pods,
kube-scheduler binds them to kwok's fake Node, kwok marks them Running and Ready (no container runs), and
KServe's manager (built by ``scripts/build_kserve.sh``) creates the Deployment, Service and HorizontalPodAutoscaler
of each InferenceService, serves its webhooks to the API server and writes the status the target waits on. The
project's kserve target drives it: deploy, canary, set_traffic, promote, rollback and delete, each through KServe's
validating webhook. See docs/kserve-controller.md.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

import pytest

from hybridml.core.schema import NUMERIC, FeatureSchema, FeatureSpec
from hybridml.deploy.config import KServeConfig
from hybridml.deploy.contract import ModelRef
from hybridml.deploy.kserve import render
from hybridml.deploy.kserve.target import KServeTarget
from hybridml.errors import InvalidInputError
from tests.integration.k8s.conftest import make_namespace
from tests.integration.k8s.kserve_controller import _storage_container
from tests.integration.k8s.test_controller_manager import eventually

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane
    from tests.integration.k8s.kserve_controller import KServeController

pytestmark = pytest.mark.integration

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client  # noqa: E402

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
SCHEMA = FeatureSchema("label", ("no", "yes"), (FeatureSpec("amount", NUMERIC, False),), 10, "sha256:0")
IMAGE = "registry.example/hybridml-predictor:1"
STORAGE = _storage_container()["metadata"]["name"]
STORAGE_ANNOTATION = "internal.serving.kserve.io/storage-container-name"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"


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
        # mode "auto": the target reads Standard from KServe's own inferenceservice-config. The storage
        # initializer comes from the fixture's ClusterStorageContainer, named as the chart's would be.
        self.config = KServeConfig(
            namespace=self.ns,
            kserve_namespace=kserve.namespace,
            image=IMAGE,
            scale_metric="cpu",
            scale_target=70,
            storage_container=STORAGE,
            ready_timeout_s=45.0,
            poll_s=0.5,
        )
        self.target = KServeTarget(self.config, api_client=api)

    def isvc(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
        return obj

    def names(self) -> list[str]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)["items"]
        return sorted(item["metadata"]["name"] for item in items)

    def deployments(self, name: str) -> dict[str, Any]:
        """KServe's predictor Deployments of InferenceService ``name``, by name."""
        items = self.apps.list_namespaced_deployment(self.ns, label_selector=f"{ISVC_LABEL}={name}").items
        return {d.metadata.name: d for d in items}


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


def test_kserve_refuses_an_invalid_spec_as_invalid_input_and_nothing_is_applied(cluster: Cluster) -> None:
    """A cpu target of 150 % passes the CRD schema; KServe's validating webhook refuses it (HTTP 403).

    The target reports the webhook's reason as invalid input, not as a permission error. (Serverless mode: there
    the cpu metric runs through Knative's HPA class, which KServe checks; nothing is reconciled here.)
    """
    config = dataclasses.replace(cluster.config, mode="Serverless", scale_target=150)
    invalid = KServeTarget(config, api_client=cluster.target.api_client)
    denied = r'admission webhook "inferenceservice-validator\.[^"]+" denied the request: '
    reason = re.escape("the target utilization percentage should be a [1-100] integer")

    with pytest.raises(InvalidInputError) as refused:
        invalid.deploy(ref("1", "refused"))

    assert re.fullmatch(
        rf"patch inferenceservices in namespace '{cluster.ns}' refused: {denied}{reason}", str(refused.value)
    )
    assert "refused" not in cluster.names()


@pytest.mark.parametrize(
    ("mode", "percent"),
    [("Standard", None), ("Standard", 0), ("Standard", 30), ("Serverless", None), ("Serverless", 30)],
)
def test_kserve_admits_every_shape_the_target_renders(cluster: Cluster, mode: str, percent: int | None) -> None:
    """Each rendered InferenceService passes KServe's defaulting and validating webhooks (server-side dry run)."""
    name = f"shape-{mode.lower()}-{percent if percent is not None else 'stable'}"
    stable = render.Served("1", f"s3://models/{name}/1")
    canary = render.Served("2", f"s3://models/{name}/2") if percent is not None else None
    body = render.inference_service(cluster.config, name, mode, stable, canary, percent or 0, ("amount",))

    admitted = cluster.custom.create_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL, body, dry_run="All")

    # KServe v0.20's defaulter renames Serverless to Knative (the target reads both).
    stored_mode = admitted["metadata"]["annotations"][render.MODE_ANNOTATION]
    assert stored_mode == {"Standard": "Standard", "Serverless": "Knative"}[mode]
    assert render.normalize_mode(stored_mode) == mode
    newest = canary if canary is not None and mode == "Serverless" else stable
    assert admitted["spec"]["predictor"]["model"]["storageUri"] == newest.storage_uri
    canaries_admitted = admitted["spec"].get("canary") or []
    assert [c["trafficPercent"] for c in canaries_admitted] == ([percent] if mode == "Standard" and canary else [])
    assert name not in cluster.names()


def test_the_target_deploys_an_inference_service_that_kserve_makes_ready(cluster: Cluster) -> None:
    """target.deploy: KServe accepts the rendered object and makes its Deployment, Service and HPA."""
    deployed = cluster.target.deploy(ref("1"))

    assert (deployed.name, deployed.stable_version, deployed.canary_version) == ("churn", "1", None)
    assert (deployed.ready, deployed.detail) == (True, "stable 1 (Standard mode)")
    isvc = cluster.isvc("churn")
    assert isvc["spec"]["predictor"]["model"].get("name", "") == ""  # KServe's defaulter writes name: ""
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
    # spec.predictor.storageContainerName reaches the pod mutator, which picks that ClusterStorageContainer.
    assert pod.metadata.annotations[STORAGE_ANNOTATION] == STORAGE
    assert deployment.status.available_replicas == 1

    pods = cluster.core.list_namespaced_pod(cluster.ns, label_selector=f"{ISVC_LABEL}=churn").items
    assert [p.status.phase for p in pods] == ["Running"]
    # The pod mutator (KServe's webhook) added the storage initializer that downloads storageUri, with the
    # ClusterStorageContainer's restricted security context merged in.
    [init] = pods[0].spec.init_containers
    assert init.name == "storage-initializer"
    assert init.args[:1] == ["s3://models/churn/1"]
    assert (init.security_context.allow_privilege_escalation, init.security_context.capabilities.drop) == (
        False,
        ["ALL"],
    )

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


def canaries(cluster: Cluster, name: str) -> list[tuple[str, bool, int]]:
    status = cluster.isvc(name)["status"]
    return [(s["name"], s["ready"], s["trafficPercent"]) for s in status.get("canaryStatuses") or []]


def versions(cluster: Cluster, name: str) -> dict[str, str]:
    """Each predictor Deployment of ``name`` -> the version its pod template serves."""
    return {
        deployment: d.spec.template.metadata.labels[render.LABEL_VERSION]
        for deployment, d in cluster.deployments(name).items()
    }


def test_a_canary_splits_traffic_then_promote_and_rollback_through_kserve(cluster: Cluster) -> None:
    """deploy at 20 %, set_traffic 0 and 50, promote; a second canary, rollback: KServe follows each change."""
    cluster.target.deploy(ref("1", "churn-ab"))

    deployed = cluster.target.deploy(ref("2", "churn-ab"), 20)

    assert (deployed.stable_version, deployed.canary_version, deployed.canary_percent) == ("1", "2", 20)
    assert deployed.ready is True
    assert canaries(cluster, "churn-ab") == [("canary", True, 20)]
    status = cluster.isvc("churn-ab")["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]}["CanaryPredictorReady"] == "True"
    assert versions(cluster, "churn-ab") == {"churn-ab-predictor": "1", "churn-ab-canary-predictor": "2"}
    candidate = cluster.apps.read_namespaced_deployment("churn-ab-canary-predictor", cluster.ns)
    assert (candidate.spec.replicas, candidate.status.available_replicas) == (1, 1)
    # The canary runs a fixed replica count: its HPA (KServe's defaults) neither grows nor shrinks it.
    fixed = cluster.hpa.read_namespaced_horizontal_pod_autoscaler("churn-ab-canary-predictor", cluster.ns)
    assert (fixed.spec.min_replicas, fixed.spec.max_replicas) == (1, 1)

    # At 0 % KServe's own count would be no pod (never ready); the target keeps one.
    paused = cluster.target.set_traffic("churn-ab", 0)
    assert (paused.canary_version, paused.canary_percent, paused.ready) == ("2", 0, True)
    assert canaries(cluster, "churn-ab") == [("canary", True, 0)]
    assert cluster.apps.read_namespaced_deployment("churn-ab-canary-predictor", cluster.ns).spec.replicas == 1

    half = cluster.target.set_traffic("churn-ab", 50)
    assert (half.canary_percent, half.ready) == (50, True)
    assert canaries(cluster, "churn-ab") == [("canary", True, 50)]

    promoted = cluster.target.promote("churn-ab")
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent) == ("2", None, 0)
    assert (promoted.ready, promoted.detail) == (True, "stable 2 (Standard mode)")
    assert canaries(cluster, "churn-ab") == []
    # KServe deletes the canary's Deployment once spec.canary is gone; stable now serves version 2.
    eventually(lambda: versions(cluster, "churn-ab") == {"churn-ab-predictor": "2"})
    assert cluster.isvc("churn-ab")["spec"]["predictor"]["model"]["storageUri"] == "s3://models/churn-ab/2"

    cluster.target.deploy(ref("3", "churn-ab"), 30)
    assert versions(cluster, "churn-ab") == {"churn-ab-predictor": "2", "churn-ab-canary-predictor": "3"}
    rolled = cluster.target.rollback("churn-ab")
    assert (rolled.stable_version, rolled.canary_version, rolled.ready) == ("2", None, True)
    assert canaries(cluster, "churn-ab") == []
    eventually(lambda: versions(cluster, "churn-ab") == {"churn-ab-predictor": "2"})


def test_a_new_stable_version_after_a_rolled_back_canary_returns_once_kserve_serves_it(cluster: Cluster) -> None:
    """deploy 1, canary 2 at 20 %, rollback, deploy 3: the target returns only once the Deployment serves 3.

    KServe's ``status.observedGeneration`` is the stable Deployment's, so it cannot say whether the status is for
    the new spec; with no canary on either side the canary statuses agree with the spec before KServe has seen
    it, and the status from before deploy 3 reads Ready. The target also waits for ``NAME-predictor`` to serve 3.
    """
    cluster.target.deploy(ref("1", "churn-gap"))
    cluster.target.deploy(ref("2", "churn-gap"), 20)
    cluster.target.rollback("churn-gap")
    # The status deploy 3 is applied over: Ready, no canary statuses (as spec.canary will be).
    before = cluster.isvc("churn-gap")["status"]
    assert ({c["type"]: c["status"] for c in before["conditions"]}["Ready"], canaries(cluster, "churn-gap")) == (
        "True",
        [],
    )

    deployed = cluster.target.deploy(ref("3", "churn-gap"))

    assert (deployed.stable_version, deployed.canary_version, deployed.ready) == ("3", None, True)
    assert deployed.detail == "stable 3 (Standard mode)"
    stable = cluster.apps.read_namespaced_deployment("churn-gap-predictor", cluster.ns)
    template = stable.spec.template.metadata
    assert template.labels[render.LABEL_VERSION] == "3"
    assert template.annotations[SOURCE_URI] == "s3://models/churn-gap/3"
    assert stable.status.observed_generation == stable.metadata.generation
    assert stable.status.replicas == stable.status.updated_replicas == stable.status.available_replicas == 1


def test_delete_removes_the_inference_service_and_kubernetes_collects_what_kserve_made(cluster: Cluster) -> None:
    cluster.target.deploy(ref("1", "gone"))
    cluster.target.delete("gone")

    def collected() -> bool:
        return not cluster.deployments("gone") and "gone" not in cluster.names()

    eventually(collected)
    services = cluster.core.list_namespaced_service(cluster.ns, label_selector=f"{ISVC_LABEL}=gone").items
    hpas = cluster.hpa.list_namespaced_horizontal_pod_autoscaler(cluster.ns).items
    assert services == []
    assert "gone-predictor" not in [h.metadata.name for h in hpas]
