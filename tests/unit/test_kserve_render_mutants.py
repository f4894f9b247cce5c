"""Gaps mutation testing found in the KServe target's pure part (deploy/kserve/render.py): the annotation the
target rebuilds from (Served round trip), every refusal word for word, the whole Pod, and the defaults of
inference_service (issue 12). The exact objects per mode are in test_kserve_render.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hybridml.deploy.kserve import render
from hybridml.deploy.kserve.render import Served
from hybridml.errors import InvalidInputError
from tests.unit.test_kserve_render import CANARY, SECURE, STABLE, canary_predictor, config, predictor, ref

pytestmark = pytest.mark.unit


def test_served_is_written_with_sorted_keys_and_the_pipeline_run_only_when_known() -> None:
    assert Served("3", "s3://b/m/3").to_json() == '{"storageUri": "s3://b/m/3", "version": "3"}'
    assert (
        Served("3", "s3://b/m/3", "run-7").to_json()
        == '{"pipelineRun": "run-7", "storageUri": "s3://b/m/3", "version": "3"}'
    )


@pytest.mark.parametrize("served", [Served("3", "s3://b/m/3"), Served("12", "gs://b/m", "run-7")])
def test_served_round_trips_through_its_annotation(served: Served) -> None:
    assert Served.from_json(served.to_json()) == served


@pytest.mark.parametrize("text", [None, ""])
def test_no_annotation_is_no_served_version(text: str | None) -> None:
    assert Served.from_json(text) is None


def test_served_read_back_turns_values_into_text_and_a_missing_or_null_run_into_empty() -> None:
    assert Served.from_json('{"version": 4, "storageUri": "pvc://v/m"}') == Served("4", "pvc://v/m", "")
    assert Served.from_json('{"version": "4", "storageUri": "s", "pipelineRun": null}') == Served("4", "s", "")
    assert Served.from_json('{"version": "4", "storageUri": "s", "pipelineRun": "r"}') == Served("4", "s", "r")


def test_every_refusal_is_one_exact_line() -> None:
    with pytest.raises(InvalidInputError) as caught:
        render.storage_uri(config(), ref("file:///tmp/m"))
    assert caught.value.message == (
        "the cluster cannot read 'file:///tmp/m': register the model at an s3:// (or gs://, pvc://) URI"
        " or set storage_uri_prefix where the bundle is published"
    )
    with pytest.raises(InvalidInputError) as caught:
        render.check_mode_settings(config(min_replicas=0), "Standard")
    assert caught.value.message == "min_replicas 0 (scale to zero) needs KServe's Serverless mode, not Standard"
    with pytest.raises(InvalidInputError) as caught:
        render.check_mode_settings(config(scale_metric="rps"), "Standard")
    assert (
        caught.value.message == "scale_metric 'rps' needs KServe's Serverless mode (Standard scales on cpu or memory)"
    )
    with pytest.raises(InvalidInputError) as caught:
        render.normalize_mode("Raw")
    assert caught.value.message == (
        "KServe deployment mode 'Raw' is not supported by the kserve target (use Serverless or Standard)"
    )
    render.check_mode_settings(config(min_replicas=0, scale_metric="concurrency"), "Serverless")
    render.check_mode_settings(config(min_replicas=1, scale_metric="memory"), "Standard")


def test_uri_schemes_are_matched_without_case_and_others_go_under_the_prefix() -> None:
    assert render.storage_uri(config(), ref("S3://b/m")) == "S3://b/m"
    for scheme in render.CLUSTER_SCHEMES:
        assert render.storage_uri(config(), ref(f"{scheme}://x/y")) == f"{scheme}://x/y"
    prefixed = config(storage_uri_prefix="s3://pub")
    assert render.storage_uri(prefixed, ref("mlflow-artifacts:/1/a")) == "s3://pub/churn/4"


def test_the_canary_percent_defaults_to_zero_in_both_modes() -> None:
    standard = render.inference_service(config(), "churn", "Standard", STABLE, CANARY)
    assert standard["spec"]["canary"] == [
        {"predictor": {**canary_predictor(CANARY), "minReplicas": 1}, "trafficPercent": 0}
    ]
    serverless = render.inference_service(config(), "churn", "Serverless", STABLE, CANARY)
    assert serverless["spec"] == {"predictor": predictor(CANARY, canaryTrafficPercent=0)}


@pytest.mark.parametrize("percent", [1, 50, 100])
def test_a_canary_above_zero_percent_leaves_the_replica_count_to_kserve(percent: int) -> None:
    cfg = config(scale_metric="cpu", scale_target=70, min_replicas=2, max_replicas=5, storage_container="sc")
    obj = render.inference_service(cfg, "churn", "Standard", STABLE, CANARY, percent)
    assert obj["spec"]["canary"] == [
        {"predictor": canary_predictor(CANARY, storageContainerName="sc"), "trafficPercent": percent}
    ]
    assert obj["spec"]["predictor"] == {
        **predictor(STABLE, storageContainerName="sc", scaleMetric="cpu", scaleTarget=70),
        "minReplicas": 2,
        "maxReplicas": 5,
    }


def test_features_are_joined_with_commas_and_none_is_empty() -> None:
    def features(names: tuple[str, ...]) -> str:
        obj = render.inference_service(config(), "churn", "Standard", STABLE, features=names)
        return str(obj["metadata"]["annotations"]["hybridml.dev/features"])

    assert (features(()), features(("a",)), features(("a", "b", "c"))) == ("", "a", "a,b,c")


def test_the_canary_annotation_is_the_served_canary_in_both_modes() -> None:
    canary = Served("2", "s3://models/churn/2", "run-2")
    for mode in ("Standard", "Serverless"):
        obj = render.inference_service(config(), "churn", mode, STABLE, canary, 10)
        annotations = obj["metadata"]["annotations"]
        assert json.loads(annotations["hybridml.dev/canary"]) == {
            "version": "2",
            "storageUri": "s3://models/churn/2",
            "pipelineRun": "run-2",
        }
        assert obj["metadata"]["labels"]["hybridml.dev/version"] == "1"  # the label follows stable


def test_the_pod_is_the_runtime_container_with_the_models_overrides() -> None:
    cfg = config(service_account="model-reader", cpu_limit="2", memory_request="1Gi")
    resources = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}
    expected: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "churn-predictor",
            "labels": {"hybridml.dev/model": "churn", "hybridml.dev/version": "1"},
            "annotations": predictor(STABLE)["annotations"],
        },
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "registry.example/hybridml-predictor:1",
                    "args": ["--model-uri", "file:///mnt/models", "--model-name", "{{.Name}}"],
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "securityContext": SECURE,
                    "resources": resources,
                }
            ],
            "serviceAccountName": "model-reader",
        },
    }
    assert render.pod(cfg, "churn", STABLE) == expected
    without = render.pod(config(), "churn", STABLE)
    assert "serviceAccountName" not in without["spec"]
    assert without["spec"]["containers"][0]["resources"] == predictor(STABLE)["model"]["resources"]
