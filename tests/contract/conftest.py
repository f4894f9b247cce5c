"""One harness per deploy target; the contract suite runs every test against each.

A target joins the suite by adding a ``pytest.param`` to ``TARGETS`` (with its tier's marker) and a branch in
``harness``: build the target, and say how a bundle becomes a :class:`ModelRef` it can fetch (the local target
reads ``file://``; a KServe target would upload to the cluster's S3 and hand out ``s3://`` URIs).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hybridml.core.data import builtin_breast_cancer, encode_features, encode_labels, infer_schema
from hybridml.core.model import fit, save_bundle
from hybridml.deploy import DeployTarget, LocalConfig, make_target, model_ref
from tests.contract.harness import Bundles, Harness
from tests.integration.k8s.conftest import control_plane  # noqa: F401 - the kserve harness's API server

TARGETS = [
    pytest.param("local", marks=pytest.mark.integration, id="local"),
    pytest.param("sagemaker", marks=pytest.mark.integration, id="sagemaker-moto"),
    # control_plane: it asks for the fixture by name at run time, so the marker says so at collection.
    pytest.param("kserve", marks=[pytest.mark.integration, pytest.mark.control_plane], id="kserve-apiserver"),
]
# The sagemaker test bed is moto plus two stand-ins (tests/integration/sagemaker/container_bridge.py): moto
# has no UpdateEndpoint, so the endpoint is recreated on the new config (the state a successful update ends
# in; the update's own requests are asserted by tests/unit/test_sagemaker_stubbed.py), and moto runs no model,
# so InvokeEndpoint goes to the project's predictor in SageMaker mode serving the model.tar.gz the target
# uploaded, on the variant drawn by weight. What SageMaker itself does not allow is skipped, with the reason.
MOTO_MISSING = {
    "canary beside a shadow": "SageMaker allows a shadow variant only beside a single production variant (the"
    " target refuses the combination; tests/unit/test_sagemaker_stubbed.py)",
}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    root = tmp_path_factory.mktemp("contract-bundles")
    frame, target = builtin_breast_cancer()
    schema = infer_schema(frame, target)
    X, y = encode_features(frame, schema), encode_labels(frame, schema)
    for name, trees in (("v1", 20), ("v2", 3)):
        save_bundle(fit("xgboost", {"n_estimators": trees}, X, y), "xgboost", {}, schema, root / name)
    small = pd.DataFrame({"amount": [float(i % 13) for i in range(60)], "label": ["no", "yes"] * 30})
    small_schema = infer_schema(small, "label")
    model = fit("logistic_regression", {}, encode_features(small, small_schema), encode_labels(small, small_schema))
    save_bundle(model, "logistic_regression", {}, small_schema, root / "other")
    shutil.copytree(root / "v1", root / "broken")
    (root / "broken" / "model.json").write_text("{broken")
    rows = [{k: float(v) for k, v in frame[schema.names].iloc[i].items()} for i in (0, 1, 7)]
    return Bundles(root / "v1", root / "v2", root / "other", root / "broken", rows)


@pytest.fixture(params=TARGETS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local":
        config = LocalConfig(tmp_path / "deployments", start_timeout_s=60)
        target = make_target(config)

        def crash(name: str) -> None:
            os.killpg(target.state(name)["pid"], signal.SIGKILL)

        yield Harness(
            target,
            ref=lambda name, version, bundle: model_ref(name, version, bundle.as_uri()),
            with_clock=lambda clock, sleep: make_target(config, clock=clock, sleep=sleep),
            break_serving=crash,
        )
    elif request.param == "sagemaker":
        yield from _sagemaker_harness(request)
        return
    elif request.param == "kserve":
        yield from _kserve_harness(request)
        return
    else:  # pragma: no cover - each target adds its branch
        raise AssertionError(f"no harness for {request.param}")
    for deployment in target.list():  # never leave a deployment behind, whatever failed
        target.delete(deployment.name)


def _sagemaker_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The sagemaker target over a clean moto_server account; a broken deployment reads as ``Updating``."""
    from tests.integration.sagemaker.container_bridge import ContainerBridge, emulate_update_endpoint
    from tests.integration.sagemaker.motoserver import config

    moto = request.getfixturevalue("moto_for_contract")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in moto.env.items():
        monkeypatch.setenv(key, value)
    moto.reset()
    broken: set[str] = set()
    bridge = ContainerBridge(moto, request.getfixturevalue("tmp_path") / "containers")

    def hooked(target: DeployTarget) -> DeployTarget:
        def stalled(parsed: dict[str, Any], **_: Any) -> None:
            if parsed.get("EndpointName") in broken:
                parsed["EndpointStatus"] = "Updating"  # what a hung update looks like to DescribeEndpoint

        events = target.clients.sagemaker.meta.events  # type: ignore[attr-defined]
        events.register("after-call.sagemaker.DescribeEndpoint", stalled)
        events.register("before-call.sagemaker.UpdateEndpoint", emulate_update_endpoint(moto))
        bridge.attach(target.clients.runtime)  # type: ignore[attr-defined]
        return target

    settings = config(ready_timeout_s=30.0)
    target = hooked(make_target(settings))
    yield Harness(
        target,
        ref=lambda name, version, bundle: model_ref(name, version, bundle.as_uri()),
        with_clock=lambda clock, sleep: hooked(make_target(settings, clock=clock, sleep=sleep)),
        break_serving=broken.add,
        missing=MOTO_MISSING,
    )
    broken.clear()
    bridge.close()
    for deployment in target.list():
        target.delete(deployment.name)


@pytest.fixture(scope="session")
def moto_for_contract(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.integration.sagemaker import motoserver

    with motoserver.running(tmp_path_factory.mktemp("moto-contract")) as server:
        yield server


# The kserve test bed is the real kube-apiserver of tests/integration/k8s (no KServe controller, no kubelet): a
# thread plays KServe's controller by writing each InferenceService's status (tests/integration/k8s/kserve_bed.py).
KSERVE_MISSING = {
    "scores": "the test API server has no data plane (no KServe controller or kubelet runs the predictor), so"
    " invoke has no endpoint to call",
    "shadow": "KServe InferenceServices do not mirror requests (the kserve target refuses a shadow)",
    "refusing a model that does not load before deploying": "the cluster loads the model (KServe reports"
    " FailedToLoad, the target then restores the previous spec: tests/integration/k8s/test_kserve_target.py)",
}


def _kserve_harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The kserve target in a fresh namespace of the test API server; bundles are published as s3:// URIs."""
    import time
    from collections.abc import Callable

    from hybridml.deploy import KServeConfig, ModelRef
    from hybridml.deploy.kserve import KServeTarget
    from tests.integration.k8s.kserve_bed import Controller, ControllerThread, kserve_namespace, make_namespace

    plane = request.getfixturevalue("control_plane")
    namespace = make_namespace(plane)
    controller = Controller(plane, namespace)
    config = KServeConfig(
        namespace=namespace,
        kserve_namespace=kserve_namespace(plane, "Standard"),
        image="registry.example/hybridml-predictor:1",
        ready_timeout_s=10.0,
        poll_s=0.2,
    )

    def make(clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> KServeTarget:
        return KServeTarget(config, api_client=plane.api_client(), clock=clock, sleep=sleep)

    def ref(name: str, version: str, bundle: Path) -> ModelRef:
        local = model_ref(name, version, bundle.as_uri())  # reads the bundle's schema and profile
        return ModelRef(name, version, f"s3://contract/{bundle.name}/{version}", local.schema, local.profile)

    def crash(name: str) -> None:
        controller.broken.add(name)  # reconciled at once, so the next status read sees it
        controller.reconcile(
            controller.custom.get_namespaced_custom_object(*_ISVC, namespace, "inferenceservices", name)
        )

    running = ControllerThread(controller)
    target = make()
    try:
        yield Harness(target, ref=ref, with_clock=make, break_serving=crash, missing=KSERVE_MISSING)
    finally:
        running.stop()


_ISVC = ("serving.kserve.io", "v1beta1")
