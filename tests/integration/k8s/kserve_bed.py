"""Plays KServe's controller on the test API server: namespaces for a test, and status written as KServe would."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from hybridml.deploy.kserve import render

if TYPE_CHECKING:
    from tests.integration.k8s.conftest import ControlPlane

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
SOURCE_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"


class Controller:
    """Plays KServe's controller: writes each InferenceService's status when asked (from the target's sleep).

    ``behaviour`` is ``ready`` (everything Ready, the canary at its share), ``canary-fails`` (stable Ready, the
    canary's model fails to load and its traffic falls back to 0) or ``never`` (no status is ever written). A
    bundle published under ``.../broken/...`` fails to load whatever the behaviour; a name in ``broken`` has
    its Ready condition False (its pods crash). In Standard mode it also writes the stable predictor's Deployment
    (``NAME-predictor``: the predictor's labels and ``storageUri`` in its pod template, one replica rolled out), as
    KServe and the Deployment controller would; nothing else runs (no ReplicaSet, no Pod).
    """

    def __init__(self, plane: ControlPlane, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(plane.api_client())
        self.apps = client.AppsV1Api(plane.api_client())
        self.namespace = namespace
        self.behaviour = "ready"
        self.broken: set[str] = set()
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.behaviour != "never":
            for item in self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)["items"]:
                self.reconcile(item)

    def url(self, obj: dict[str, Any]) -> str:
        """The status URL KServe would report (no data plane here: a subclass may serve the model for real)."""
        return f"http://{obj['metadata']['name']}.{self.namespace}.example.com"

    def reconcile(self, obj: dict[str, Any]) -> None:
        meta, spec = obj["metadata"], obj["spec"]
        name, generation = meta["name"], meta["generation"]
        mode = meta.get("annotations", {}).get(render.MODE_ANNOTATION, "Standard")
        canaries = spec.get("canary") or []
        percent = spec["predictor"].get("canaryTrafficPercent")
        newest = (canaries[0]["predictor"] if canaries else spec["predictor"])["model"]["storageUri"]
        failing = self.behaviour == "canary-fails" or "/broken/" in newest
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "url": self.url(obj),
            "deploymentMode": "RawDeployment" if mode == "Standard" else mode,
            "conditions": [ready],
            "modelStatus": {"states": {"activeModelState": "Loaded", "targetModelState": "Loaded"}},
        }
        if name in self.broken:
            ready.update(status="False", reason="PredictorNotReady", message="predictor pods crash")
        if failing and not canaries and percent is None:  # a stable-only object whose model fails to load
            ready.update(status="False", reason="ModelLoadFailed", message="model failed to load")
            status["modelStatus"] = {
                "transitionStatus": "BlockedByFailedLoad",
                "states": {"activeModelState": "FailedToLoad"},
                "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "model failed to load"},
            }
        if canaries:
            status["canaryStatuses"] = [
                {
                    "name": canaries[0]["predictor"]["name"],  # KServe reports the canary predictor's name
                    "ready": not failing,
                    "trafficPercent": 0 if failing else canaries[0]["trafficPercent"],
                    "modelStatus": {
                        "transitionStatus": "BlockedByFailedLoad" if failing else "UpToDate",
                        "states": {"activeModelState": "FailedToLoad" if failing else "Loaded"},
                    },
                }
            ]
        revision = f"{name}-predictor-{generation:05d}"
        previous = f"{name}-predictor-{generation - 1:05d}"
        traffic = [{"revisionName": revision, "latestRevision": True, "percent": 100}]
        if percent is not None:
            traffic = [
                {"revisionName": previous, "latestRevision": False, "percent": 100 if failing else 100 - percent},
                {"revisionName": revision, "latestRevision": True, "percent": 0 if failing else percent},
            ]
        status["components"] = {
            "predictor": {
                "latestCreatedRevision": revision,
                "latestReadyRevision": previous if failing and percent is not None else revision,
                "traffic": traffic,
            }
        }
        if mode == "Standard":
            self.roll_out(name, spec["predictor"])
        body = {"status": status}
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, name, body)

    def roll_out(self, name: str, predictor: dict[str, Any]) -> None:
        """Write ``NAME-predictor`` for the stable ``predictor`` and report its one replica updated and available."""
        name = f"{name}-predictor"
        selector = {"app": f"isvc.{name}"}
        template = client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(
                labels={**selector, **(predictor.get("labels") or {})},
                annotations={SOURCE_URI: predictor["model"]["storageUri"]},
            ),
            spec=client.V1PodSpec(containers=[client.V1Container(name="kserve-container", image="kserve")]),
        )
        match = client.V1LabelSelector(match_labels=selector)
        spec = client.V1DeploymentSpec(replicas=1, selector=match, template=template)
        try:
            current = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            current = self.apps.create_namespaced_deployment(
                self.namespace, client.V1Deployment(metadata=client.V1ObjectMeta(name=name), spec=spec)
            )
        else:
            current.spec = spec
            current.status = None
            current = self.apps.replace_namespaced_deployment(name, self.namespace, current)
        one = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
        status = {"status": {"observedGeneration": current.metadata.generation, **one}}
        self.apps.patch_namespaced_deployment_status(name, self.namespace, status)


class ControllerThread:
    """Runs ``controller`` over its namespace every 20 ms in a thread (for callers that really sleep)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        custom, controller = self.controller.custom, self.controller
        while not self.stopping.wait(0.02):
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, controller.namespace, PLURAL)["items"]:
                status = item.get("status") or {}
                ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
                stale = status.get("observedGeneration") != item["metadata"]["generation"]
                newly_broken = item["metadata"]["name"] in controller.broken and ready.get("status") == "True"
                if stale or newly_broken:
                    with contextlib.suppress(ApiException):  # deleted or changed meanwhile: seen next round
                        controller.reconcile(item)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


def make_namespace(plane: ControlPlane, enforce: str = "restricted") -> str:
    """A fresh namespace with its ``default`` ServiceAccount (no controller-manager creates it here)."""
    from tests.integration.k8s.conftest import make_namespace as fresh

    return fresh(plane, enforce, prefix="k")


def kserve_namespace(plane: ControlPlane, mode: str | None) -> str:
    """A namespace standing for KServe's, holding ``inferenceservice-config`` with ``mode`` (None: no ConfigMap)."""
    name = make_namespace(plane, "baseline")
    if mode is not None:
        data = {"deploy": json.dumps({"defaultDeploymentMode": mode})}
        client.CoreV1Api(plane.api_client()).create_namespaced_config_map(
            name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="inferenceservice-config"), data=data)
        )
    return name
