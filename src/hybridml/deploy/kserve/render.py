"""Pure builders of the KServe objects the target applies: InferenceService, ServingRuntime, pod template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hybridml.deploy.config import KServeConfig
from hybridml.deploy.contract import ModelRef
from hybridml.errors import InvalidInputError

GROUP = "serving.kserve.io"
ISVC_API = f"{GROUP}/v1beta1"
RUNTIME_API = f"{GROUP}/v1alpha1"
MODEL_FORMAT = "hybridml"
PORT = 8080
CONTAINER = "kserve-container"
# spec.canary[0].predictor.name: KServe names the canary's Deployment and Service <isvc>-canary-predictor.
CANARY = "canary"
SERVERLESS, STANDARD = "Serverless", "Standard"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# Serverless mode scales with Knative's own autoscaler (concurrency, rps) unless this class says HPA (cpu, memory).
KNATIVE_CLASS = ("autoscaling.knative.dev/class", "hpa.autoscaling.knative.dev")
# Labels select what the target created (delete and list touch nothing else); annotations carry what it needs
# to rebuild the object (rollback re-renders stable from them) and link back to the registry.
MANAGED_BY = ("app.kubernetes.io/managed-by", "hybridml")
LABEL_MODEL = "hybridml.dev/model"
LABEL_VERSION = "hybridml.dev/version"
ANN_STABLE = "hybridml.dev/stable"
ANN_CANARY = "hybridml.dev/canary"
ANN_FEATURES = "hybridml.dev/features"
# Schemes KServe's storage initializer reads itself; anything else must be published under storage_uri_prefix.
CLUSTER_SCHEMES = ("s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs", "hf", "oci", "azure")


@dataclass(frozen=True)
class Served:
    """One version as the cluster serves it: its label, where KServe's storage initializer reads it, and the
    pipeline run that produced it (empty: unknown; kept in the annotation so a re-render keeps the link)."""

    version: str
    storage_uri: str
    pipeline_run: str = ""

    def to_json(self) -> str:
        raw = {"version": self.version, "storageUri": self.storage_uri}
        if self.pipeline_run:
            raw["pipelineRun"] = self.pipeline_run
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Served | None:
        if not text:
            return None
        raw = json.loads(text)
        return cls(str(raw["version"]), str(raw["storageUri"]), str(raw.get("pipelineRun") or ""))


def normalize_mode(mode: str) -> str:
    """``Serverless`` or ``Standard``; refuse the rest.

    KServe v0.20 renamed them ``Knative`` and ``Standard`` (its defaulting webhook rewrites a ``Serverless``
    annotation to ``Knative``); ``RawDeployment`` is Standard's older name. The target keeps writing
    ``Serverless``, which every KServe version takes.
    """
    if mode in (SERVERLESS, "Knative"):
        return SERVERLESS
    if mode in (STANDARD, "RawDeployment"):
        return STANDARD
    raise InvalidInputError(
        f"KServe deployment mode {mode!r} is not supported by the kserve target (use Serverless or Standard)"
    )


def storage_uri(config: KServeConfig, ref: ModelRef) -> str:
    """Where the cluster reads ``ref``: its own URI when KServe reads that scheme, else under the prefix.

    Raises:
        InvalidInputError: a local or MLflow URI and no ``storage_uri_prefix`` to publish it under.
    """
    scheme = urlsplit(ref.artifact_uri).scheme.lower()
    if scheme in CLUSTER_SCHEMES:
        return ref.artifact_uri
    if config.storage_uri_prefix is None:
        raise InvalidInputError(
            f"the cluster cannot read {ref.artifact_uri!r}: register the model at an s3:// (or gs://, pvc://) URI"
            " or set storage_uri_prefix where the bundle is published"
        )
    return f"{config.storage_uri_prefix}/{ref.name}/{ref.version}"


def check_mode_settings(config: KServeConfig, mode: str) -> None:
    """Refuse settings the mode cannot honour (KServe would ignore them silently)."""
    if mode == STANDARD and config.min_replicas == 0:
        raise InvalidInputError("min_replicas 0 (scale to zero) needs KServe's Serverless mode, not Standard")
    if mode == STANDARD and config.scale_metric in ("concurrency", "rps"):
        raise InvalidInputError(
            f"scale_metric {config.scale_metric!r} needs KServe's Serverless mode (Standard scales on cpu or memory)"
        )


def container_security_context() -> dict[str, Any]:
    """What the ``restricted`` Pod Security profile asks of a container (the image runs as uid 1000)."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """The pod-level half of the ``restricted`` profile."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def scrape_annotations() -> dict[str, str]:
    """Prometheus scrape annotations of the predictor pods (the predictor serves ``/metrics`` on its port)."""
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(PORT),
        "prometheus.io/path": "/metrics",
        "serving.kserve.io/enable-prometheus-scraping": "true",
    }


def predictor(config: KServeConfig, name: str, served: Served) -> dict[str, Any]:
    """The ``PredictorSpec`` serving one version: model format, runtime, storage, resources and autoscaling.

    ``spec.predictor`` as KServe's validating webhook accepts it: ``model`` has no ``name`` ("the 'name' field is
    not allowed in standard predictor"); KServe names the container ``kserve-container`` itself.
    """
    spec: dict[str, Any] = {
        "minReplicas": config.min_replicas,
        "maxReplicas": config.max_replicas,
        "labels": {LABEL_MODEL: name, LABEL_VERSION: served.version},
        "annotations": scrape_annotations(),
        "securityContext": pod_security_context(),
        "model": {
            "modelFormat": {"name": MODEL_FORMAT},
            "runtime": config.runtime,
            "storageUri": served.storage_uri,
            "resources": {
                "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
                "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
            },
            "securityContext": container_security_context(),
        },
    }
    if config.service_account is not None:
        spec["serviceAccountName"] = config.service_account
    if config.storage_container is not None:
        spec["storageContainerName"] = config.storage_container
    if config.scale_metric is not None:
        spec["scaleMetric"] = config.scale_metric
    if config.scale_target is not None:
        spec["scaleTarget"] = config.scale_target
    return spec


def canary_predictor(config: KServeConfig, name: str, served: Served, percent: int) -> dict[str, Any]:
    """The ``spec.canary[0].predictor`` of Standard mode, as KServe v0.20's validating webhook accepts it.

    It is named :data:`CANARY` (KServe names its Deployment and Service ``<name>-canary-predictor``), its model
    keeps the ``name`` the CRD requires there, and it sets no autoscaling: KServe refuses ``maxReplicas``,
    ``scaleMetric`` and ``scaleTarget`` on a canary and runs it at a fixed replica count, by default
    ``ceil(stable minReplicas * percent / 100)`` (taken off the stable predictor's minimum). At 0 % that is no
    pod at all, and a canary without an available pod is never ready, so there ``minReplicas`` is 1.
    """
    spec = predictor(config, name, served)
    for field in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"):
        spec.pop(field, None)
    if percent == 0:
        spec["minReplicas"] = 1
    # The CRD requires spec.canary[].predictor.model.name; KServe names the container so anyway.
    return {"name": CANARY, **spec, "model": {"name": CONTAINER, **spec["model"]}}


def inference_service(
    config: KServeConfig,
    name: str,
    mode: str,
    stable: Served,
    canary: Served | None = None,
    canary_percent: int = 0,
    features: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The InferenceService serving ``stable`` (and ``canary`` at ``canary_percent``) in ``mode``.

    Standard mode keeps stable in ``spec.predictor`` and the canary in ``spec.canary[0]`` with its
    ``trafficPercent`` (see :func:`canary_predictor`: KServe's own replica count, no autoscaling). Serverless
    mode (Knative revisions) puts the newest spec in ``spec.predictor`` with ``canaryTrafficPercent``: Knative
    sends the rest to the previous ready revision, i.e. stable (with the configured autoscaling).
    """
    mode = normalize_mode(mode)
    check_mode_settings(config, mode)
    labels = {MANAGED_BY[0]: MANAGED_BY[1], LABEL_MODEL: name, LABEL_VERSION: stable.version}
    annotations = {MODE_ANNOTATION: mode, ANN_STABLE: stable.to_json(), ANN_FEATURES: ",".join(features)}
    if mode == SERVERLESS and config.scale_metric in ("cpu", "memory"):
        # KServe's webhook refuses cpu and memory for Knative's autoscaler ("[cpu] is not a supported metric").
        annotations[KNATIVE_CLASS[0]] = KNATIVE_CLASS[1]
    spec: dict[str, Any]
    if canary is None:
        spec = {"predictor": predictor(config, name, stable)}
    elif mode == STANDARD:
        annotations[ANN_CANARY] = canary.to_json()
        spec = {
            "predictor": predictor(config, name, stable),
            "canary": [
                {"predictor": canary_predictor(config, name, canary, canary_percent), "trafficPercent": canary_percent}
            ],
        }
    else:
        annotations[ANN_CANARY] = canary.to_json()
        spec = {"predictor": {**predictor(config, name, canary), "canaryTrafficPercent": canary_percent}}
    return {
        "apiVersion": ISVC_API,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": config.namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    }


def serving_runtime(config: KServeConfig) -> dict[str, Any]:
    """The ``hybridml`` ServingRuntime: the project's predictor image reading the bundle KServe put in /mnt/models."""
    return {
        "apiVersion": RUNTIME_API,
        "kind": "ServingRuntime",
        "metadata": {
            "name": config.runtime,
            "namespace": config.namespace,
            "labels": {MANAGED_BY[0]: MANAGED_BY[1]},
        },
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "version": "1", "autoSelect": True}],
            "protocolVersions": ["v1", "v2"],
            "annotations": {"prometheus.kserve.io/port": str(PORT), "prometheus.kserve.io/path": "/metrics"},
            "containers": [
                {
                    "name": CONTAINER,
                    "image": config.image,
                    # The image's ENTRYPOINT binds 0.0.0.0:8080; these replace its CMD.
                    "args": ["--model-uri", "file:///mnt/models", "--model-name", "{{.Name}}"],
                    "ports": [{"containerPort": PORT, "protocol": "TCP"}],
                    "securityContext": container_security_context(),
                }
            ],
        },
    }


def pod(config: KServeConfig, name: str, served: Served) -> dict[str, Any]:
    """The predictor pod the target's objects ask KServe for (runtime container with the model's overrides).

    KServe builds the real pod; this is its security-relevant shape, for admission checks (Pod Security).
    """
    spec = predictor(config, name, served)
    container = {**serving_runtime(config)["spec"]["containers"][0]}
    container["resources"] = spec["model"]["resources"]
    container["securityContext"] = spec["model"]["securityContext"]
    body: dict[str, Any] = {"securityContext": spec["securityContext"], "containers": [container]}
    if "serviceAccountName" in spec:
        body["serviceAccountName"] = spec["serviceAccountName"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-predictor", "labels": spec["labels"], "annotations": spec["annotations"]},
        "spec": body,
    }
