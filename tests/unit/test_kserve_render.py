"""The KServe target's object builders: the exact InferenceService per mode, checked against the CRD schema."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hybridml.core.schema import NUMERIC, FeatureSchema, FeatureSpec
from hybridml.deploy.config import KServeConfig, config_from
from hybridml.deploy.contract import ModelRef
from hybridml.deploy.kserve import render
from hybridml.deploy.kserve.render import Served
from hybridml.errors import InvalidInputError

# The first shared/crds/kserve above this file: found from the copy of the tests mutmut runs too (build/mutation*).
CRDS = next(
    (p / "shared" / "crds" / "kserve" for p in Path(__file__).resolve().parents if (p / "shared" / "crds").is_dir()),
    Path(__file__).resolve().parents[3] / "shared" / "crds" / "kserve",
)
SCHEMA = FeatureSchema(
    "label",
    ("no", "yes"),
    (FeatureSpec("amount", NUMERIC, False), FeatureSpec("age", NUMERIC, False)),
    10,
    "sha256:0",
)
STABLE = Served("1", "s3://models/churn/1")
CANARY = Served("2", "s3://models/churn/2")
SECURE = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def closed(schema: Any) -> Any:
    """``schema`` with unknown fields refused, as a structural CRD schema does (it prunes or rejects them)."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        open_ = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and not open_:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def crd_schema(filename: str, version: str) -> dict[str, Any]:
    if not CRDS.is_dir():
        pytest.skip(f"the shared CRDs are not at {CRDS}")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((CRDS / filename).read_text(), Loader=loader)
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    schema = closed(schema)
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's, not the CRD's
    return schema


@pytest.fixture(scope="module")
def isvc_schema() -> dict[str, Any]:
    return crd_schema("serving.kserve.io_inferenceservices.yaml", "v1beta1")


def valid(obj: dict[str, Any], schema: dict[str, Any]) -> None:
    """Validate ``obj`` (jsonschema.validate would first check the 2 MB schema itself, for seconds per call)."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator(schema).validate(obj)


def config(**changes: Any) -> KServeConfig:
    return KServeConfig(namespace="ml", image="registry.example/hybridml-predictor:1", **changes)


def predictor(served: Served, **extra: Any) -> dict[str, Any]:
    """The predictor the default ``config()`` renders for ``served`` in model ``churn``."""
    return {
        "minReplicas": 1,
        "maxReplicas": 3,
        "labels": {"hybridml.dev/model": "churn", "hybridml.dev/version": served.version},
        "annotations": {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "8080",
            "prometheus.io/path": "/metrics",
            "serving.kserve.io/enable-prometheus-scraping": "true",
        },
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "model": {
            "modelFormat": {"name": "hybridml"},
            "runtime": "hybridml",
            "storageUri": served.storage_uri,
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": SECURE,
        },
        **extra,
    }


def canary_predictor(served: Served, **extra: Any) -> dict[str, Any]:
    """``spec.canary[0].predictor`` as KServe v0.20 accepts it: named, its model named, no autoscaling fields."""
    spec = predictor(served, **extra)
    for field in ("minReplicas", "maxReplicas"):
        del spec[field]
    return {"name": "canary", **spec, "model": {"name": "kserve-container", **spec["model"]}}


def metadata(mode: str, canary: Served | None = None) -> dict[str, Any]:
    annotations = {
        "serving.kserve.io/deploymentMode": mode,
        "hybridml.dev/stable": '{"storageUri": "s3://models/churn/1", "version": "1"}',
        "hybridml.dev/features": "amount,age",
    }
    if canary is not None:
        annotations["hybridml.dev/canary"] = json.dumps(
            {"storageUri": canary.storage_uri, "version": canary.version}, sort_keys=True
        )
    return {
        "name": "churn",
        "namespace": "ml",
        "labels": {
            "app.kubernetes.io/managed-by": "hybridml",
            "hybridml.dev/model": "churn",
            "hybridml.dev/version": "1",
        },
        "annotations": annotations,
    }


@pytest.mark.parametrize("mode", ["Standard", "Serverless"])
def test_stable_only_is_the_same_in_both_modes(mode: str, isvc_schema: dict[str, Any]) -> None:
    obj = render.inference_service(config(), "churn", mode, STABLE, features=("amount", "age"))
    assert obj == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(mode),
        "spec": {"predictor": predictor(STABLE)},
    }
    valid(obj, isvc_schema)


def test_standard_canary_is_spec_canary_with_traffic_percent(isvc_schema: dict[str, Any]) -> None:
    obj = render.inference_service(config(), "churn", "Standard", STABLE, CANARY, 30, ("amount", "age"))
    assert obj["metadata"] == metadata("Standard", CANARY)
    assert obj["spec"] == {
        "predictor": predictor(STABLE),
        "canary": [{"predictor": canary_predictor(CANARY), "trafficPercent": 30}],
    }
    assert "canaryTrafficPercent" not in json.dumps(obj)  # ignored in Standard mode (kserve#5335)
    valid(obj, isvc_schema)


def test_only_the_canary_model_is_named_as_kserve_v0_20_validates() -> None:
    """KServe refuses ``spec.predictor.model.name``; its CRD requires ``spec.canary[].predictor.model.name``."""
    obj = render.inference_service(config(), "churn", "Standard", STABLE, CANARY, 30)
    assert "name" not in obj["spec"]["predictor"] and "name" not in obj["spec"]["predictor"]["model"]
    canary = obj["spec"]["canary"][0]["predictor"]
    assert (canary["name"], canary["model"]["name"]) == ("canary", "kserve-container")


def test_the_canary_sets_no_autoscaling_and_keeps_a_pod_at_zero_percent(isvc_schema: dict[str, Any]) -> None:
    """KServe refuses a canary's maxReplicas, scaleMetric and scaleTarget; at 0 % it would run no pod at all."""
    cfg = config(scale_metric="cpu", scale_target=70, min_replicas=2, max_replicas=5)
    obj = render.inference_service(cfg, "churn", "Standard", STABLE, CANARY, 30)
    stable, canary = obj["spec"]["predictor"], obj["spec"]["canary"][0]["predictor"]
    assert (stable["minReplicas"], stable["maxReplicas"], stable["scaleMetric"], stable["scaleTarget"]) == (
        2,
        5,
        "cpu",
        70,
    )
    assert not {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"} & set(canary)
    paused = render.inference_service(cfg, "churn", "Standard", STABLE, CANARY, 0)
    assert paused["spec"]["canary"] == [{"predictor": {**canary, "minReplicas": 1}, "trafficPercent": 0}]
    valid(paused, isvc_schema)


def test_storage_container_names_the_cluster_storage_container(isvc_schema: dict[str, Any]) -> None:
    cfg = config(storage_container="hybridml-restricted")
    obj = render.inference_service(cfg, "churn", "Standard", STABLE, CANARY, 30)
    assert obj["spec"]["predictor"]["storageContainerName"] == "hybridml-restricted"
    assert obj["spec"]["canary"][0]["predictor"]["storageContainerName"] == "hybridml-restricted"
    assert "storageContainerName" not in json.dumps(render.inference_service(config(), "churn", "Standard", STABLE))
    valid(obj, isvc_schema)


def test_knative_is_serverless() -> None:
    """KServe v0.20's defaulting webhook stores a Serverless InferenceService's mode as ``Knative``."""
    assert render.normalize_mode("Knative") == "Serverless"
    knative = render.inference_service(config(mode="Knative"), "churn", "Knative", STABLE, CANARY, 30)
    assert knative == render.inference_service(config(), "churn", "Serverless", STABLE, CANARY, 30)


def test_raw_deployment_is_standard() -> None:
    raw = render.inference_service(config(), "churn", "RawDeployment", STABLE, CANARY, 30, ("amount", "age"))
    assert raw == render.inference_service(config(), "churn", "Standard", STABLE, CANARY, 30, ("amount", "age"))


def test_serverless_canary_is_the_newest_predictor_with_canary_traffic_percent(isvc_schema: dict[str, Any]) -> None:
    obj = render.inference_service(config(), "churn", "Serverless", STABLE, CANARY, 25, ("amount", "age"))
    assert obj["metadata"] == metadata("Serverless", CANARY)
    assert obj["spec"] == {"predictor": predictor(CANARY, canaryTrafficPercent=25)}
    valid(obj, isvc_schema)


def test_optional_fields_render_and_validate(isvc_schema: dict[str, Any]) -> None:
    cfg = config(service_account="model-reader", scale_metric="rps", scale_target=40, min_replicas=0)
    obj = render.inference_service(cfg, "churn", "Serverless", STABLE)
    spec = obj["spec"]["predictor"]
    assert (spec["serviceAccountName"], spec["scaleMetric"], spec["scaleTarget"], spec["minReplicas"]) == (
        "model-reader",
        "rps",
        40,
        0,
    )
    valid(obj, isvc_schema)


@pytest.mark.parametrize(("metric", "annotated"), [("cpu", True), ("memory", True), ("rps", False), (None, False)])
def test_serverless_cpu_and_memory_scaling_name_knative_hpa_class(metric: str | None, annotated: bool) -> None:
    """KServe refuses cpu and memory for Knative's own autoscaler; the HPA class makes Knative use an HPA."""
    cfg = config(scale_metric=metric, scale_target=70 if metric else None)
    annotations = render.inference_service(cfg, "churn", "Serverless", STABLE)["metadata"]["annotations"]
    assert annotations.get("autoscaling.knative.dev/class") == ("hpa.autoscaling.knative.dev" if annotated else None)
    if metric in ("cpu", "memory"):  # Standard mode scales with an HPA anyway: no Knative annotation
        standard = render.inference_service(cfg, "churn", "Standard", STABLE)["metadata"]["annotations"]
        assert "autoscaling.knative.dev/class" not in standard


def test_the_schema_check_can_fail(isvc_schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    obj = render.inference_service(config(), "churn", "Standard", STABLE, CANARY, 30)
    for path, value in ((("canary", 0, "trafficPercent"), 101), (("predictor", "minReplica"), 1)):
        broken = copy.deepcopy(obj)
        node = broken["spec"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            valid(broken, isvc_schema)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_replicas": 0}, "min_replicas 0 (scale to zero) needs KServe's Serverless mode"),
        ({"scale_metric": "rps"}, "scale_metric 'rps' needs KServe's Serverless mode"),
        ({"scale_metric": "concurrency"}, "scale_metric 'concurrency' needs KServe's Serverless mode"),
    ],
)
def test_standard_mode_refuses_what_it_would_ignore(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        render.inference_service(config(**changes), "churn", "Standard", STABLE)
    render.inference_service(config(**changes), "churn", "Serverless", STABLE)  # allowed there


@pytest.mark.parametrize("mode", ["ModelMesh", "", "serverless"])
def test_unknown_modes_are_refused(mode: str) -> None:
    with pytest.raises(InvalidInputError, match=f"KServe deployment mode {mode!r} is not supported"):
        render.inference_service(config(), "churn", mode, STABLE)


def test_serving_runtime_is_the_project_image_and_validates() -> None:
    runtime = render.serving_runtime(config())
    assert runtime == {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "hybridml", "namespace": "ml", "labels": {"app.kubernetes.io/managed-by": "hybridml"}},
        "spec": {
            "supportedModelFormats": [{"name": "hybridml", "version": "1", "autoSelect": True}],
            "protocolVersions": ["v1", "v2"],
            "annotations": {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"},
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "registry.example/hybridml-predictor:1",
                    "args": ["--model-uri", "file:///mnt/models", "--model-name", "{{.Name}}"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "securityContext": SECURE,
                }
            ],
        },
    }
    valid(runtime, crd_schema("serving.kserve.io_servingruntimes.yaml", "v1alpha1"))


def test_pod_carries_the_restricted_controls_and_the_service_account() -> None:
    pod = render.pod(config(service_account="model-reader"), "churn", STABLE)
    assert pod["spec"]["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["spec"]["serviceAccountName"] == "model-reader"
    (container,) = pod["spec"]["containers"]
    assert (container["image"], container["securityContext"]) == ("registry.example/hybridml-predictor:1", SECURE)
    assert container["resources"] == predictor(STABLE)["model"]["resources"]


def ref(uri: str) -> ModelRef:
    return ModelRef("churn", "4", uri, SCHEMA)


@pytest.mark.parametrize("uri", ["s3://b/churn/4", "gs://b/m", "pvc://claim/m", "https://h.example/m.tgz"])
def test_storage_uri_passes_what_the_cluster_reads(uri: str) -> None:
    assert render.storage_uri(config(), ref(uri)) == uri
    assert render.storage_uri(config(storage_uri_prefix="s3://other/"), ref(uri)) == uri


@pytest.mark.parametrize("uri", ["file:///tmp/b", "/tmp/b", "models:/churn/4", "mlflow-artifacts:/1/x"])
def test_storage_uri_maps_local_uris_under_the_prefix_or_refuses(uri: str) -> None:
    assert render.storage_uri(config(storage_uri_prefix="s3://published/models/"), ref(uri)) == (
        "s3://published/models/churn/4"
    )
    with pytest.raises(InvalidInputError, match=r"the cluster cannot read .*set storage_uri_prefix"):
        render.storage_uri(config(), ref(uri))


# ----- KServeConfig ---------------------------------------------------------------------------------------


def test_config_defaults_and_factory_lookup() -> None:
    cfg = config_from("kserve", {"namespace": "ml"}, settings=None)  # type: ignore[arg-type]
    assert isinstance(cfg, KServeConfig)
    assert (cfg.namespace, cfg.runtime, cfg.mode, cfg.field_manager, cfg.kubeconfig, cfg.min_replicas) == (
        "ml",
        "hybridml",
        "auto",
        "hybridml",
        None,
        1,
    )


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"namespace": "Bad_NS"}, "namespace"),
        ({"runtime": ""}, "runtime"),
        ({"service_account": "A"}, "service_account"),
        ({"storage_container": "Not A Name"}, "storage_container"),
        ({"image": " "}, "image"),
        ({"cpu_request": "lots"}, "cpu_request"),
        ({"memory_limit": "1GB"}, "memory_limit"),
        ({"min_replicas": -1}, "min_replicas"),
        ({"max_replicas": 0}, "max_replicas"),
        ({"min_replicas": 4, "max_replicas": 3}, "max_replicas"),
        ({"scale_metric": "gpu"}, "scale_metric"),
        ({"scale_target": 0}, "scale_target"),
        ({"storage_uri_prefix": "file:///x"}, "storage_uri_prefix"),
        ({"storage_uri_prefix": "bucket/x"}, "storage_uri_prefix"),
        ({"mode": "ModelMesh"}, "mode"),
        ({"ready_timeout_s": 0}, "ready_timeout_s"),
        ({"poll_s": -1}, "poll_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"field_manager": ""}, "field_manager"),
    ],
)
def test_config_refuses_bad_values_naming_the_key(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^kserve deploy config: {key} must be"):
        KServeConfig(**changes)


def test_config_unknown_key_is_named() -> None:
    with pytest.raises(InvalidInputError, match="unknown kserve deploy config key 'replicas'"):
        config_from("kserve", {"replicas": 2}, settings=None)  # type: ignore[arg-type]
