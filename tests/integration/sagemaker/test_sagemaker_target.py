"""The SageMaker target against a real moto_server process: create path, S3 layout, idempotence, cleanup, invoke."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from hybridml.core.model import read_bundle
from hybridml.deploy import model_ref
from hybridml.deploy.sagemaker import SageMakerTarget, pack
from hybridml.deploy.sagemaker.naming import config_name, model_name
from hybridml.errors import ConflictError, InvalidInputError, NotFoundError, NotReadyError
from hybridml.serving.predictor import BundlePredictor
from tests.integration.sagemaker.conftest import SmBundles
from tests.integration.sagemaker.container_bridge import ContainerBridge, emulate_update_endpoint
from tests.integration.sagemaker.motoserver import BUCKET, IMAGE_URI, ROLE_ARN, MotoServer

Make = Callable[..., SageMakerTarget]


def resources(aws: MotoServer) -> dict[str, Any]:
    """Everything SageMaker and S3 hold now: models, configs (with tags), endpoints, S3 objects (with times)."""
    sm, s3 = aws.client("sagemaker"), aws.client("s3")
    return {
        "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        "configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted(
            (e["EndpointName"], e["EndpointStatus"], str(e["LastModifiedTime"]))
            for e in sm.list_endpoints()["Endpoints"]
        ),
        "objects": sorted(
            (o["Key"], o["ETag"], str(o["LastModified"])) for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
        ),
    }


def test_create_path_reaches_in_service_with_the_variants_tags_and_archive(
    make: Make, aws: MotoServer, sm_bundles: SmBundles
) -> None:
    target = make()
    deployed = target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    package = pack(sm_bundles.v1, "project")
    key = f"hybridml/churn/1/{package.sha256[:16]}/model.tar.gz"
    data_url = f"s3://{BUCKET}/{key}"
    model = model_name("churn", "1", {"data": data_url, "image": IMAGE_URI, "role": ROLE_ARN, "serving": "project"})
    config = config_name(
        "churn", {"variants": {"stable": [model, 100]}, "shadow": None, "instances": ["ml.m5.large", 1]}
    )
    assert deployed == target.status("churn")
    assert (deployed.name, deployed.target, deployed.stable_version, deployed.canary_version) == (
        "churn",
        "sagemaker",
        "1",
        None,
    )
    assert (deployed.canary_percent, deployed.shadow_version, deployed.ready) == (0, None, True)
    assert deployed.endpoint == f"{aws.url}/endpoints/churn/invocations"
    assert deployed.detail == f"serving 1 on SageMaker endpoint churn (config {config})"

    sm = aws.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName="churn")
    assert (endpoint["EndpointStatus"], endpoint["EndpointConfigName"]) == ("InService", config)
    assert [
        (v["VariantName"], v["CurrentWeight"], v["CurrentInstanceCount"]) for v in endpoint["ProductionVariants"]
    ] == [("stable", 100.0, 1)]
    described = sm.describe_endpoint_config(EndpointConfigName=config)
    assert described["ProductionVariants"] == [
        {
            "VariantName": "stable",
            "ModelName": model,
            "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large",
            "InitialVariantWeight": 100.0,
        }
    ]
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=described["EndpointConfigArn"])["Tags"]}
    assert tags["hybridml:endpoint"] == "churn" and tags["hybridml:stable"] == "1"
    assert tags["hybridml:serving"] == "project" and "hybridml:canary" not in tags
    container = sm.describe_model(ModelName=model)
    assert container["ExecutionRoleArn"] == ROLE_ARN
    assert container["PrimaryContainer"]["Image"] == IMAGE_URI
    assert container["PrimaryContainer"]["ModelDataUrl"] == data_url
    assert container["PrimaryContainer"]["Environment"] == {
        "HYBRIDML_MODEL_NAME": "churn",
        "HYBRIDML_MODEL_VERSION": "1",
    }

    # The archive: the bundle's files at the root, byte for byte, and the manifest beside it.
    s3 = aws.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == [key.replace("model.tar.gz", "hybridml.json"), key]
    archive = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert archive == package.data
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == sorted(p.name for p in sm_bundles.v1.iterdir())
        assert all(m.isfile() and m.mtime == 0 and m.uid == 0 for m in members)
        for member in members:
            extracted = tar.extractfile(member)
            assert extracted is not None and extracted.read() == (sm_bundles.v1 / member.name).read_bytes()
    assert [d.name for d in target.list()] == ["churn"]


def test_the_archive_is_reproducible_and_refuses_what_the_builtin_image_cannot_serve(sm_bundles: SmBundles) -> None:
    assert pack(sm_bundles.v1, "project") == pack(sm_bundles.v1, "project")
    builtin = pack(sm_bundles.v1, "xgboost-builtin")
    assert builtin.members == ("xgboost-model",)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(builtin.data)), mode="r:") as tar:
        extracted = tar.extractfile("xgboost-model")
        assert extracted is not None
        content = extracted.read()
    assert content == (sm_bundles.v1 / "model.json").read_bytes()
    booster = xgb.Booster(model_file=bytearray(content))  # what the built-in image loads, as it loads it
    rows = np.array([[row[k] for k in read_bundle(sm_bundles.v1).schema.names] for row in sm_bundles.rows])
    expected = BundlePredictor.load(sm_bundles.v1).predict(sm_bundles.rows)
    assert booster.predict(xgb.DMatrix(rows)) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(
        InvalidInputError,
        match=r"XGBoost models only, this is logistic_regression; deploy it with serving='project'"
        r" \(the project's predictor image\)",
    ):
        pack(sm_bundles.logistic, "xgboost-builtin")
    with pytest.raises(
        InvalidInputError, match=r"cannot encode category features \(city\); deploy it with serving='project'"
    ):
        pack(sm_bundles.categorical, "xgboost-builtin")


def test_builtin_serving_is_refused_before_anything_is_created(
    make: Make, aws: MotoServer, sm_bundles: SmBundles
) -> None:
    target = make(serving="xgboost-builtin")
    with pytest.raises(InvalidInputError, match="the project's predictor image"):
        target.deploy(model_ref("cat", "1", sm_bundles.categorical.as_uri()))
    assert resources(aws) == {"models": [], "configs": [], "endpoints": [], "objects": []}


def test_a_re_deploy_of_the_version_in_service_changes_nothing(
    make: Make, aws: MotoServer, sm_bundles: SmBundles
) -> None:
    target = make()
    first = target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    before = resources(aws)
    assert len(before["models"]) == 1 and len(before["configs"]) == 1 and len(before["objects"]) == 2
    again = make().deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))  # a fresh target object: no memory
    assert again == first
    assert resources(aws) == before


def test_cleanup_deletes_what_the_endpoint_no_longer_uses_and_never_what_it_uses(
    make: Make, aws: MotoServer, sm_bundles: SmBundles
) -> None:
    target = make()
    sm = aws.client("sagemaker")
    target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    target.deploy(model_ref("churn-x", "1", sm_bundles.v1.as_uri()))  # its names start with "churn-" too
    old = resources(aws)
    # The endpoint goes away outside hybridml: its config and model are left behind, unused.
    sm.delete_endpoint(EndpointName="churn")
    with pytest.raises(NotFoundError, match="no sagemaker deployment 'churn'"):
        target.status("churn")
    deployed = target.deploy(model_ref("churn", "2", sm_bundles.v2.as_uri()))
    assert deployed.stable_version == "2"
    now = resources(aws)
    in_use = sm.describe_endpoint(EndpointName="churn")["EndpointConfigName"]
    used_model = sm.describe_endpoint_config(EndpointConfigName=in_use)["ProductionVariants"][0]["ModelName"]
    churn_x = [n for n in old["models"] + old["configs"] if n.startswith("churn-x-")]
    assert len(churn_x) == 2
    assert now["configs"] == sorted([in_use, *[n for n in churn_x if n in old["configs"]]])
    assert now["models"] == sorted([used_model, *[n for n in churn_x if n in old["models"]]])
    assert used_model.startswith("churn-v2-")
    # Archives are kept (content-addressed; a bucket lifecycle rule may expire them).
    assert {o[0] for o in old["objects"]} < {o[0] for o in now["objects"]}

    target.delete("churn")
    left = resources(aws)
    assert [n for n in left["models"] + left["configs"] if not n.startswith("churn-x-")] == []
    assert [e[0] for e in left["endpoints"]] == ["churn-x"]
    assert [d.name for d in target.list()] == ["churn-x"]


def test_refusals_change_nothing(make: Make, aws: MotoServer, sm_bundles: SmBundles) -> None:
    target = make()
    target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    before = resources(aws)
    with pytest.raises(InvalidInputError, match="has no stable version yet"):
        target.deploy(model_ref("other", "1", sm_bundles.v1.as_uri()), traffic_percent=10)
    with pytest.raises(InvalidInputError):
        target.deploy(model_ref("churn", "2", sm_bundles.broken.as_uri()))
    with pytest.raises(InvalidInputError, match="canary '2' has different features than stable '1'"):
        target.deploy(model_ref("churn", "2", sm_bundles.categorical.as_uri()), traffic_percent=10)
    with pytest.raises(ConflictError, match="has no canary"):
        target.promote("churn")
    with pytest.raises(ConflictError, match="has no canary"):
        target.set_traffic("churn", 10)
    with pytest.raises(ConflictError, match="has no shadow to remove"):
        target.shadow("churn", None)
    with pytest.raises(
        InvalidInputError, match=r"sagemaker deploy needs image_uri, bucket \(give --image-uri, --bucket"
    ):
        make(image_uri=None, bucket=None).deploy(model_ref("churn", "3", sm_bundles.v2.as_uri()))
    assert resources(aws) == before


def test_endpoints_not_made_by_hybridml_are_not_listed_or_touched(
    make: Make, aws: MotoServer, sm_bundles: SmBundles
) -> None:
    sm = aws.client("sagemaker")
    sm.create_model(ModelName="foreign", ExecutionRoleArn=ROLE_ARN, PrimaryContainer={"Image": IMAGE_URI})
    sm.create_endpoint_config(
        EndpointConfigName="foreign",
        ProductionVariants=[
            {"VariantName": "all", "ModelName": "foreign", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}
        ],
    )
    sm.create_endpoint(EndpointName="foreign", EndpointConfigName="foreign")
    target = make()
    assert target.list() == []
    with pytest.raises(NotFoundError, match="'foreign' exists but was not deployed by hybridml"):
        target.delete("foreign")
    assert sm.describe_endpoint(EndpointName="foreign")["EndpointStatus"] == "InService"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"predictions": [0.25, 0.5, 0.75]}', "application/json"),
        ('{"predictions": [{"score": 0.25}, {"score": 0.5}, {"score": 0.75}]}', "application/json"),
        ("0.25\n0.5\n0.75\n", "text/csv"),
        ("0.25,0.5,0.75", "text/csv"),
    ],
)
def test_invoke_reads_json_and_csv_answers(
    make: Make, aws: MotoServer, sm_bundles: SmBundles, body: str, content_type: str
) -> None:
    target = make()
    target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    aws.queue_invoke_results([body], content_type)
    assert target.invoke("churn", sm_bundles.rows) == [0.25, 0.5, 0.75]


def test_invoke_refuses_an_answer_with_another_number_of_scores(
    make: Make, aws: MotoServer, sm_bundles: SmBundles
) -> None:
    target = make()
    target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    aws.queue_invoke_results(['{"predictions": [0.25]}'])
    with pytest.raises(NotReadyError, match=r"^endpoint answered 1 scores for 3 rows$"):
        target.invoke("churn", sm_bundles.rows)
    with pytest.raises(NotFoundError, match="no sagemaker deployment 'ghost'"):
        target.invoke("ghost", sm_bundles.rows)


def test_a_validation_error_is_not_retried_and_no_secret_reaches_a_message_or_log(
    make: Make,
    aws: MotoServer,
    sm_bundles: SmBundles,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-hybridml-never-shown"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    sleeps: list[float] = []
    target = make(instance_type="ml.bogus.xlarge", sleep=sleeps.append)  # a validation error never sleeps
    assert target.clients.sagemaker.meta.endpoint_url == aws.url  # AWS_ENDPOINT_URL, from the standard chain
    caplog.set_level("DEBUG")
    with pytest.raises(
        InvalidInputError, match=r"^SageMaker CreateEndpointConfig failed: ValidationException: "
    ) as caught:
        target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    assert sleeps == []
    assert secret not in str(caught.value) and secret not in caplog.text
    assert resources(aws)["endpoints"] == [] and resources(aws)["configs"] == []


def test_names_are_checked_before_any_call(make: Make, aws: MotoServer, sm_bundles: SmBundles) -> None:
    target = make()
    with pytest.raises(InvalidInputError, match=re.escape("invalid model name 'My_Model'")):
        target.deploy(model_ref("My_Model", "1", sm_bundles.v1.as_uri()))
    with pytest.raises(InvalidInputError, match=re.escape("invalid model name '../x'")):
        target.status("../x")
    assert target.list() == []
    assert resources(aws) == {"models": [], "configs": [], "endpoints": [], "objects": []}


def test_invoke_through_the_project_container_returns_the_models_scores(
    make: Make, aws: MotoServer, sm_bundles: SmBundles, tmp_path: Path
) -> None:
    target = make()
    bridge = ContainerBridge(aws, tmp_path)
    bridge.attach(target.clients.runtime)
    try:
        target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
        scores = target.invoke("churn", sm_bundles.rows)
        assert scores == pytest.approx(BundlePredictor.load(sm_bundles.v1).predict(sm_bundles.rows), abs=1e-6)
        sent = bridge.invocations[0]
        assert sent["headers"] == {"Content-Type": "application/json", "Accept": "application/json"}
        assert json.loads(sent["body"]) == {"instances": sm_bundles.rows}
        with pytest.raises(InvalidInputError, match=r"^endpoint 'churn' refused the rows \(4\d\d\): "):
            target.invoke("churn", [{"mean radius": "not a number"}])
    finally:
        bridge.close()


def test_invoke_through_the_builtin_layout_sends_csv_in_feature_order(
    make: Make, aws: MotoServer, sm_bundles: SmBundles, tmp_path: Path
) -> None:
    target = make(serving="xgboost-builtin")
    target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    aws.queue_invoke_results(["0.5\n0.25\n0.125\n"], "text/csv")
    assert target.invoke("churn", sm_bundles.rows) == [0.5, 0.25, 0.125]
    features = read_bundle(sm_bundles.v1).schema.names
    model = aws.client("sagemaker").list_models()["Models"][0]["ModelName"]
    assert target._features(model) == features  # read back from the manifest uploaded beside the archive


def test_canary_then_promote_leaves_only_what_the_endpoint_uses(
    make: Make, aws: MotoServer, sm_bundles: SmBundles
) -> None:
    target = make()
    target.clients.sagemaker.meta.events.register("before-call.sagemaker.UpdateEndpoint", emulate_update_endpoint(aws))
    sm = aws.client("sagemaker")
    target.deploy(model_ref("churn", "1", sm_bundles.v1.as_uri()))
    canary = target.deploy(model_ref("churn", "2", sm_bundles.v2.as_uri()), traffic_percent=25)
    assert (canary.stable_version, canary.canary_version, canary.canary_percent) == ("1", "2", 25)
    described = sm.describe_endpoint(EndpointName="churn")
    assert [(v["VariantName"], v["CurrentWeight"]) for v in described["ProductionVariants"]] == [
        ("stable", 75.0),
        ("canary", 25.0),
    ]
    assert resources(aws)["configs"] == [described["EndpointConfigName"]]  # the stable-only config is gone
    assert len(resources(aws)["models"]) == 2
    moved = target.set_traffic("churn", 60)
    assert (moved.canary_percent, moved.ready) == (60, True)
    assert [v["CurrentWeight"] for v in sm.describe_endpoint(EndpointName="churn")["ProductionVariants"]] == [
        40.0,
        60.0,
    ]
    promoted = target.promote("churn")
    assert (promoted.stable_version, promoted.canary_version, promoted.canary_percent) == ("2", None, 0)
    now = resources(aws)
    in_use = sm.describe_endpoint(EndpointName="churn")["EndpointConfigName"]
    assert now["configs"] == [in_use]
    assert now["models"] == [
        sm.describe_endpoint_config(EndpointConfigName=in_use)["ProductionVariants"][0]["ModelName"]
    ]
    assert now["models"][0].startswith("churn-v2-")
